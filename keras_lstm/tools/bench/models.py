"""The benchmark's model-level workloads, in the process that runs them:
`last` (the train step with the loss on the last output), `dynamic`
(an epoch of batches each padded to its own length, also in
BucketedSequences batches), `decode` (greedy decoding, one step a call)
and `fit` (model.fit with validation). See workloads.py for the list.
"""

import time

import numpy as np

from keras_lstm.tools.bench import util
from keras_lstm.tools.bench.contenders import (
    lstm_class,
    median_rows,
    tensors,
    to_device,
)
from keras_lstm.tools.bench.util import time_alternating, torch_module

# -- train step, loss on the last output only --------------------------------


def last(backend, repeats):
    import keras

    from keras_lstm import convert

    torch = torch_module()
    rows = []
    for shape_name, shape in util.SHAPES.items():
        batch, timesteps, features, units = shape
        rng = np.random.default_rng(6)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        y = rng.normal(size=(batch, units)).astype("float32")
        models = {}
        for contender in ("keras", "keras_lstm"):
            models[contender] = keras.Sequential(
                [
                    keras.Input(batch_shape=(batch, timesteps, features)),
                    lstm_class(contender)(units),
                ]
            )
            models[contender].compile(
                optimizer=keras.optimizers.SGD(1e-3), loss="mse"
            )
        models["keras_lstm"].set_weights(models["keras"].get_weights())
        runners = {
            name: (lambda m=m, x=x, y=y: m.train_on_batch(x, y))
            for name, m in models.items()
        }
        if torch is not None:
            lstm = to_device(convert.to_torch(models["keras_lstm"].layers[-1]))
            optimizer = torch.optim.SGD(lstm.parameters(), lr=1e-3)
            tx, ty = tensors(x, y)

            def torch_step(lstm=lstm, optimizer=optimizer, tx=tx, ty=ty):
                optimizer.zero_grad()
                h = lstm(tx)[1][0][0]
                torch.nn.functional.mse_loss(h, ty).backward()
                optimizer.step()

            runners["torch.nn"] = torch_step
        medians = time_alternating(runners, repeats)
        row = {
            "backend": backend,
            "workload": f"train, last output, {shape_name}",
        }
        row.update(unit="ms", **medians)
        rows.append(row)
    return rows


# -- dynamic padding ----------------------------------------------------------

_LENGTHS = tuple(range(20, 141, 10))


def _dynamic_batches(rng, features=16):
    """13 batches of 16 sequences, batch i padded to its longest (20 + 10i
    steps); the sequences themselves have lengths 11..140."""
    batches, sequences = [], []
    for longest in _LENGTHS:
        lengths = rng.integers(longest - 9, longest + 1, size=16)
        lengths[0] = longest
        rows = [
            rng.normal(size=(n, features)).astype("float32") for n in lengths
        ]
        sequences += rows
        x = np.zeros((16, longest, features), "float32")
        for i, row in enumerate(rows):
            x[i, : len(row)] = row
        batches.append((x, rng.normal(size=(16, 1)).astype("float32")))
    return batches, sequences


def _small_model(contender, features=16, units=32):
    import keras

    model = keras.Sequential(
        [
            keras.Input((None, features)),
            keras.layers.Masking(),
            lstm_class(contender)(units),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def _two_passes(model, batches):
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for x, y in batches:
            model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def dynamic(backend, repeats):
    import keras_lstm

    rng = np.random.default_rng(0)
    batches, sequences = _dynamic_batches(rng)
    targets = np.concatenate([y for _, y in batches])
    bucketed = keras_lstm.BucketedSequences(
        sequences, targets, batch_size=16, seed=0
    )
    bucketed_batches = [bucketed[i] for i in range(len(bucketed))]
    # Warm-up at another size: the process's one-time costs.
    warm = [(x[:4, :9, :3], y[:4]) for x, y in batches[:2]]
    for contender in ("keras", "keras_lstm"):
        _two_passes(_small_model(contender, features=3, units=5), warm)
    torch = torch_module()
    samples = {
        "first": {"keras": [], "keras_lstm": []},
        "second": {"keras": [], "keras_lstm": []},
        "bucketed first": {"keras_lstm": []},
        "bucketed second": {"keras_lstm": []},
    }
    if torch is not None:
        samples["first"]["torch.nn"] = []
        samples["second"]["torch.nn"] = []
    for _ in range(repeats):
        for contender in ("keras", "keras_lstm"):
            first, second = _two_passes(_small_model(contender), batches)
            samples["first"][contender].append(first)
            samples["second"][contender].append(second)
        first, second = _two_passes(
            _small_model("keras_lstm"), bucketed_batches
        )
        samples["bucketed first"]["keras_lstm"].append(first)
        samples["bucketed second"]["keras_lstm"].append(second)
        if torch is not None:
            first, second = _torch_dynamic(torch, batches)
            samples["first"]["torch.nn"].append(first)
            samples["second"]["torch.nn"].append(second)
    shapes = len({x.shape for x, _ in bucketed_batches})
    notes = {
        "bucketed first": f"BucketedSequences: {shapes} shapes, not 13",
        "bucketed second": f"BucketedSequences: {shapes} shapes, not 13",
    }
    return [
        median_rows(
            backend, f"dynamic padding, {name} pass", s, "s", notes.get(name)
        )
        for name, s in samples.items()
    ]


def _torch_dynamic(torch, batches):
    """torch.nn.LSTM + Linear on the same padded batches (packed)."""
    lstm = to_device(torch.nn.LSTM(16, 32, batch_first=True))
    head = to_device(torch.nn.Linear(32, 1))
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params)
    # The lengths stay on the CPU: pack_padded_sequence takes them there.
    batch_tensors = [
        (*tensors(x, y), torch.from_numpy((x != 0).any(-1).sum(1)))
        for x, y in batches
    ]
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for x, y, lengths in batch_tensors:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
            _, (h, _) = lstm(packed)
            loss = torch.nn.functional.mse_loss(head(h[0]), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        util.sync()
        times.append(time.perf_counter() - start)
    return times


# -- step-by-step decoding ----------------------------------------------------


def decode(backend, repeats, steps=100):
    import keras

    rng = np.random.default_rng(1)
    features, units = 32, 128
    x = rng.normal(size=(1, 1, features)).astype("float32")
    runners = {}
    for contender in ("keras", "keras_lstm"):
        layer = lstm_class(contender)(units, return_state=True)
        layer.build((1, 1, features))
        if contender == "keras_lstm":
            layer.set_weights(runners["keras"][1].get_weights())
        runners[contender] = (
            _decoder(keras.ops.convert_to_tensor(x), layer, units),
            layer,
        )
    torch = torch_module()
    if torch is not None:
        from keras_lstm import convert

        lstm = to_device(convert.to_torch(runners["keras"][1]))
        runners["torch.nn"] = (_torch_decoder(torch, x, lstm), None)
    samples = {name: [] for name in runners}
    for run, _ in runners.values():
        run(10)  # warm-up
    for _ in range(repeats):
        for name, (run, _) in runners.items():
            start = time.perf_counter()
            run(steps)
            samples[name].append((time.perf_counter() - start) / steps * 1e3)
    note = f"batch 1, {features} features, {units} units, eager calls"
    return [
        median_rows(backend, "greedy decoding, per step", samples, "ms", note)
    ]


def _decoder(x, layer, units):
    import keras

    def run(steps):
        h = c = keras.ops.zeros((1, units))
        for _ in range(steps):
            _, h, c = layer(x, initial_state=[h, c])
        return keras.ops.convert_to_numpy(h)

    return run


def _torch_decoder(torch, x, lstm):
    (x,) = tensors(x)

    def run(steps):
        state = None
        with torch.no_grad():
            for _ in range(steps):
                _, state = lstm(x, state)
        return state[0].cpu().numpy()  # also waits for CUDA

    return run


# -- model.fit with validation ------------------------------------------------


def _sequence_model(contender):
    import keras

    cls = lstm_class(contender)
    model = keras.Sequential(
        [
            keras.Input((7, 8)),
            cls(64, return_sequences=True),
            cls(64),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def _encoder_decoder(contender):
    import keras

    cls = lstm_class(contender)
    source = keras.Input((None, 20))
    target = keras.Input((None, 20))
    _, h, c = cls(64, return_state=True)(source)
    decoded = cls(64, return_sequences=True)(target, initial_state=[h, c])
    outputs = keras.layers.Dense(20, activation="softmax")(decoded)
    model = keras.Model([source, target], outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def fit(backend, repeats):
    rng = np.random.default_rng(2)
    cases = {
        "fit: two LSTM(64), 7 steps": (
            _sequence_model,
            rng.normal(size=(3000, 7, 8)).astype("float32"),
            rng.normal(size=(3000, 1)).astype("float32"),
            32,
        ),
        "fit: encoder-decoder LSTM(64)": (
            _encoder_decoder,
            [
                np.eye(20, dtype="float32")[rng.integers(0, 20, (1200, 15))],
                np.eye(20, dtype="float32")[rng.integers(0, 20, (1200, 12))],
            ],
            np.eye(20, dtype="float32")[rng.integers(0, 20, (1200, 12))],
            64,
        ),
    }
    rows = []
    for name, (build, x, y, batch_size) in cases.items():
        for contender in ("keras", "keras_lstm"):  # warm-up
            build(contender)
        samples = {"keras": [], "keras_lstm": []}
        for _ in range(repeats):
            for contender in samples:
                model = build(contender)
                start = time.perf_counter()
                model.fit(
                    x,
                    y,
                    batch_size=batch_size,
                    epochs=2,
                    validation_split=0.2,
                    verbose=0,
                )
                samples[contender].append(time.perf_counter() - start)
        note = f"2 epochs, batch {batch_size}, validation_split 0.2"
        rows.append(median_rows(backend, name, samples, "s", note))
    return rows
