"""An independent NumPy float64 LSTM: the reference the package must match.

This module deliberately imports neither Keras nor `keras_lstm`: it is the
written-down semantics of the layer, so a bug shared by the package and
Keras cannot hide behind agreement between the two.
"""

import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x):
    # Keras 3 definition (Keras 2 used 0.2 * x + 0.5).
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _relu(x):
    return np.maximum(x, 0.0)


def _linear(x):
    return x


_ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": _relu,
    "hard_sigmoid": _hard_sigmoid,
    "linear": _linear,
    None: _linear,
}


def get_activation(name):
    """Returns the NumPy function for an activation name.

    Args:
        name: One of "tanh", "sigmoid", "relu", "hard_sigmoid", "linear" or
            None (identity).

    Returns:
        A function mapping a float64 array to a float64 array.

    Raises:
        ValueError: If the name is not known.
    """
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"Unknown activation: {name!r}") from None


def _f64(x):
    return None if x is None else np.asarray(x, dtype=np.float64)


def lstm_reference(
    inputs,
    kernel,
    recurrent_kernel,
    bias=None,
    initial_state=None,
    mask=None,
    activation="tanh",
    recurrent_activation="sigmoid",
    return_sequences=False,
    return_state=False,
    go_backwards=False,
    time_major=False,
    input_dropout_mask=None,
    recurrent_dropout_mask=None,
):
    """Runs an LSTM step by step in float64.

    Gate order is i, f, c, o (as in `keras.layers.LSTMCell`):
    `z = x_t @ kernel + h @ recurrent_kernel + bias`, then
    `c = f * c + i * act(g)` and `h = o * act(c)`.

    Args:
        inputs: Array (batch, timesteps, features), or (timesteps, batch,
            features) if `time_major`.
        kernel: Array (features, 4 * units).
        recurrent_kernel: Array (units, 4 * units).
        bias: Array (4 * units,) or None for no bias.
        initial_state: None (zeros) or `[h0, c0]`, each (batch, units).
        mask: None or a boolean array (batch, timesteps), or (timesteps,
            batch) if `time_major`. At a masked step the states are kept and
            the output repeats the previous step's output (zeros before the
            first unmasked step of a row).
        activation: Name of the cell/candidate activation.
        recurrent_activation: Name of the gate activation.
        return_sequences: Whether to return every step's output.
        return_state: Whether to also return the final `h` and `c`.
        go_backwards: Whether to process the timesteps in reverse order. The
            returned sequence stays in processing (reversed) order.
        time_major: Whether inputs, mask and the returned sequence put time
            first.
        input_dropout_mask: None or an array (batch, features) multiplied
            into every input step (already scaled by `1 / (1 - rate)`).
        recurrent_dropout_mask: None or an array (batch, units) multiplied
            into `h` inside `h @ recurrent_kernel` only.

    Returns:
        The output, (batch, units) or the whole sequence if
        `return_sequences`; with `return_state` a list
        `[output, h_final, c_final]`. All float64 arrays.
    """
    x = _f64(inputs)
    kernel = _f64(kernel)
    recurrent_kernel = _f64(recurrent_kernel)
    bias = _f64(bias)
    if x.ndim != 3:
        raise ValueError(f"inputs must be rank 3, got shape {x.shape}")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
    if time_major:
        x = np.transpose(x, (1, 0, 2))
        if mask is not None:
            mask = np.transpose(mask)
    batch, timesteps, _ = x.shape
    units = recurrent_kernel.shape[0]
    if kernel.shape != (x.shape[2], 4 * units):
        raise ValueError(f"kernel shape {kernel.shape} does not fit inputs")
    if mask is None:
        mask = np.ones((batch, timesteps), dtype=bool)
    if mask.shape != (batch, timesteps):
        raise ValueError(f"mask shape {mask.shape} does not fit inputs")

    act = get_activation(activation)
    rec = get_activation(recurrent_activation)

    if initial_state is None:
        h = np.zeros((batch, units))
        c = np.zeros((batch, units))
    else:
        h, c = (_f64(s).copy() for s in initial_state)

    if go_backwards:
        x = x[:, ::-1]
        mask = mask[:, ::-1]

    in_drop = _f64(input_dropout_mask)
    rec_drop = _f64(recurrent_dropout_mask)

    # The output of a masked step repeats the previous output, which starts
    # at zeros and is tracked apart from h: with an initial_state, h is not
    # zero before the first unmasked step but the output must be.
    prev_out = np.zeros((batch, units))
    outputs = []
    for t in range(timesteps):
        x_t = x[:, t]
        if in_drop is not None:
            x_t = x_t * in_drop
        h_rec = h if rec_drop is None else h * rec_drop
        z = x_t @ kernel + h_rec @ recurrent_kernel
        if bias is not None:
            z = z + bias
        zi, zf, zg, zo = np.split(z, 4, axis=-1)
        i = rec(zi)
        f = rec(zf)
        g = act(zg)
        o = rec(zo)
        c_new = f * c + i * g
        h_new = o * act(c_new)
        m = mask[:, t][:, None]
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        out = np.where(m, h_new, prev_out)
        prev_out = out
        outputs.append(out)

    if return_sequences:
        if timesteps:
            output = np.stack(outputs, axis=1)
        else:
            output = np.zeros((batch, 0, units))
        if time_major:
            output = np.transpose(output, (1, 0, 2))
    else:
        output = prev_out
    if return_state:
        return [output, h, c]
    return output
