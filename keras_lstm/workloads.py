"""Workloads for the benchmark: what a user's whole experience costs.

The steady-state table (benchmark.py) times warmed-up calls at fixed
shapes. These time what comes before and around them, for keras.layers.LSTM
("keras"), keras_lstm.LSTM ("keras_lstm") and, where it has an equivalent,
torch.nn.LSTM ("torch.nn"):

- `last`: the train step with the loss on the last output only
  (`return_sequences=False`; torch.nn.LSTM's final h) at the three
  steady-state shapes, no mask.
- `dynamic`: an epoch of 13 batches (16 rows, 16 features, LSTM(32)), each
  padded to its own length (20, 30, ..., 140), trained with
  `train_on_batch`: the first pass (traces, compiles) and the second; and,
  for keras_lstm, the same sequences in `BucketedSequences` batches.
- `first_call`: in a fresh process, build, first predict, first train step
  and a train step at a new length (batch 32, 50 then 60 steps).
- `decode`: greedy decoding, batch 1, one step per call with the previous
  call's states as `initial_state` (ms per step).
- `fit`: `model.fit` from a new model, with validation data and a partial
  last batch: a two-LSTM sequence model and an encoder-decoder.
- `mixed`: predict and train step at the main shape under the
  `mixed_bfloat16` and `mixed_float16` policies, next to keras_lstm's own
  float32 run.
- `jit`: `model.compile(jit_compile=True)` (XLA on TensorFlow and JAX,
  torch.compile on torch): the first train step and the steady one, also
  for keras_lstm's keras.ops path (`use_cudnn=False`, "keras_lstm
  generic").
- `configs`: the configurations no fused op of the frameworks takes
  (`recurrent_dropout=0.25`, `recurrent_activation="hard_sigmoid"`,
  `activation="relu"`, `unroll=True`) and the keras.ops path
  (`use_cudnn=False` on both layers), predict and train step of an
  LSTM + Dense(1) model (Adam, MSE) at the small and main shapes, next to
  keras_lstm with the defaults ("keras_lstm defaults", for scale).
- `long`: one train step at 4,000 steps (batch 16, 64 features, 256
  units), in a fresh process per contender: seconds and peak memory (the
  resident set on a CPU, device memory on a GPU), also for the keras.ops
  path on TensorFlow and JAX ("keras_lstm generic").
- `layer`: the layer itself, called on device tensors: forward, and
  forward and backward (the gradient of the sum of the outputs with
  respect to the inputs and the weights), at the steady-state shapes with
  every mask kind. On JAX a jitted `stateless_call` (jax.value_and_grad
  for the gradient), as a Keras train step runs it; on TensorFlow a
  tf.function (GradientTape); on torch eager calls (autograd).

Every row is a median over `repeats` runs that alternate the contenders in
one process (fresh processes for `first_call` and `long`, whose subject is
the process itself), after one untimed warm-up of each contender at another
size so that neither pays the process's one-time start-up in a timed run.

Keras runs on its backend's default device (a GPU where it sees one);
torch.nn.LSTM on CUDA wherever torch sees it (bench_util.torch_device), its
timings closed by torch.cuda.synchronize (bench_util.sync).
"""

import json
import os
import sys
import time
import traceback

import numpy as np

from keras_lstm import bench_util
from keras_lstm.bench_util import time_alternating, torch_module

WORKLOADS = (
    "layer",
    "last",
    "dynamic",
    "first_call",
    "decode",
    "fit",
    "mixed",
    "jit",
    "configs",
    "long",
)
_LENGTHS = tuple(range(20, 141, 10))


_torch = torch_module  # the name the workloads below use


def _lstm_class(contender):
    import keras

    import keras_lstm

    return keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM


def _median_rows(backend, workload, samples, unit, note=""):
    """One row: the median of each contender's samples."""
    row = {"backend": backend, "workload": workload, "unit": unit}
    row.update({k: float(np.median(v)) for k, v in samples.items()})
    if note:
        row["note"] = note
    return row


def model_runners(models, mode, x, y):
    """`{name: run}`: one `predict_on_batch(x)` (mode "predict") or
    `train_on_batch(x, y)` (mode "train") of each Keras model."""
    if mode == "predict":
        return {
            name: (lambda m=m: m.predict_on_batch(x))
            for name, m in models.items()
        }
    return {
        name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()
    }


# -- torch.nn.LSTM on the device ----------------------------------------------


def to_device(module):
    """`module` on `bench_util.torch_device()` (CUDA where torch sees it)."""
    module = module.to(bench_util.torch_device())
    if hasattr(module, "flatten_parameters"):
        # One contiguous weight buffer, as cuDNN wants (a no-op on a CPU).
        module.flatten_parameters()
    return module


def tensors(*arrays):
    """torch tensors of NumPy `arrays` on `bench_util.torch_device()`."""
    device = bench_util.torch_device()
    return tuple(_torch().from_numpy(a).to(device) for a in arrays)


def torch_forward(lstm, lengths, total_length):
    """`forward(x)`: the outputs of torch.nn.LSTM `lstm` (batch first).

    With `lengths` (a CPU tensor: pack_padded_sequence takes them there),
    the right-padded rows run packed and come back padded to
    `total_length` steps, as with a Keras right-padded mask.
    """
    rnn = _torch().nn.utils.rnn

    def forward(x):
        if lengths is None:
            return lstm(x)[0]
        packed = rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out = lstm(packed)[0]
        return rnn.pad_packed_sequence(
            out, batch_first=True, total_length=total_length
        )[0]

    return forward


# -- the layer on device tensors ----------------------------------------------

LAYER_MODES = ("forward", "forward+backward")


def _jax_layer_runners(layer, x, mask):
    """Jitted, as a Keras train step runs the layer: `stateless_call`, and
    jax.value_and_grad of the sum of its outputs with respect to the
    weights and the inputs."""
    import jax
    import jax.numpy as jnp

    args = (
        [v.value for v in layer.trainable_variables],
        [v.value for v in layer.non_trainable_variables],
        jnp.asarray(x),
        None if mask is None else jnp.asarray(mask),
    )

    def call(training):
        def run(trainable, non_trainable, x, mask):
            return layer.stateless_call(
                trainable, non_trainable, x, mask=mask, training=training
            )[0]

        return run

    def loss(*args):
        return jnp.sum(call(True)(*args))

    forward = jax.jit(call(False))
    gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))
    return {
        "forward": lambda: jax.block_until_ready(forward(*args)),
        "forward+backward": lambda: jax.block_until_ready(gradient(*args)),
    }


def _tensorflow_layer_runners(layer, x, mask, on_gpu):
    """tf.functions, as a Keras train step runs the layer: the call, and
    a GradientTape of the sum of its outputs with respect to the inputs
    and the weights."""
    import tensorflow as tf

    x = tf.identity(tf.constant(x))  # on the default device
    mask = None if mask is None else tf.identity(tf.constant(mask))
    weights = layer.trainable_variables

    @tf.function
    def forward():
        return layer(x, mask=mask)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, mask=mask, training=True))
        return loss, tape.gradient(loss, [x, *weights])

    def synced(fn):
        def run():
            out = fn()
            if on_gpu:  # a GPU runs TensorFlow's ops asynchronously
                tf.test.experimental.sync_devices()
            return out

        return run

    return {
        "forward": synced(forward),
        "forward+backward": synced(forward_backward),
    }


def _torch_backend_layer_runners(layer, x, mask):
    """Eager calls, as a Keras train step runs the layer on torch: under
    no_grad, and autograd of the sum of the outputs with respect to the
    inputs and the weights (bench_util.sync waits for CUDA)."""
    import keras

    torch = sys.modules["torch"]  # the backend (even without the column)
    x = keras.ops.convert_to_tensor(x)  # on Keras' device
    mask = None if mask is None else keras.ops.convert_to_tensor(mask)
    x_grad = x.clone().requires_grad_()
    # The torch Parameters the layer computes with.
    weights = [v.value for v in layer.trainable_variables]

    def forward():
        with torch.no_grad():
            return layer(x, mask=mask)

    def forward_backward():
        loss = layer(x_grad, mask=mask, training=True).sum()
        return torch.autograd.grad(loss, [x_grad, *weights])

    return {"forward": forward, "forward+backward": forward_backward}


def _torch_nn_layer_runners(lstm, x, mask_kind, mask):
    """torch.nn.LSTM (cuDNN on a GPU) on the device: under no_grad, and
    autograd of the sum of the outputs with respect to the inputs and the
    weights; right-padded masks as a packed sequence."""
    torch = _torch()
    lstm = to_device(lstm)
    (x,) = tensors(x)
    x_grad = x.clone().requires_grad_()
    lengths = None
    if mask_kind == "right":
        lengths = torch.from_numpy(mask.sum(1))
    forward = torch_forward(lstm, lengths, x.shape[1])
    weights = list(lstm.parameters())

    def run_forward():
        with torch.no_grad():
            return forward(x)

    def run_forward_backward():
        loss = forward(x_grad).sum()
        return torch.autograd.grad(loss, [x_grad, *weights])

    return {"forward": run_forward, "forward+backward": run_forward_backward}


def layer(backend, repeats, shapes=("main", "large", "xlarge")):
    """The layer called directly on device tensors (see the module
    docstring); shapes in `bench_util.GPU_SHAPES` only on a GPU."""
    import keras_lstm
    from keras_lstm import convert

    torch = _torch()
    on_gpu = bench_util.device(backend)[1]
    rows = []
    for shape_name in shapes:
        if shape_name in bench_util.GPU_SHAPES and not on_gpu:
            print(f"layer: {shape_name} skipped (GPU only)", file=sys.stderr)
            continue
        batch, timesteps, features, units = bench_util.ALL_SHAPES[shape_name]
        rng = np.random.default_rng(7)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        layers = {}
        for contender in ("keras", "keras_lstm"):
            layers[contender] = _lstm_class(contender)(
                units, return_sequences=True
            )
            layers[contender].build((batch, timesteps, features))
        layers["keras_lstm"].set_weights(layers["keras"].get_weights())
        for mask_kind, mask in bench_util.masks(batch, timesteps, rng).items():
            runners = {}
            for contender, built in layers.items():
                if backend == "jax":
                    runners[contender] = _jax_layer_runners(built, x, mask)
                elif backend == "tensorflow":
                    runners[contender] = _tensorflow_layer_runners(
                        built, x, mask, on_gpu
                    )
                else:
                    runners[contender] = _torch_backend_layer_runners(
                        built, x, mask
                    )
            if torch is not None and mask_kind != "holes":
                runners["torch.nn"] = _torch_nn_layer_runners(
                    convert.to_torch(layers["keras_lstm"]), x, mask_kind, mask
                )
            kernel = keras_lstm.explain(layers["keras_lstm"], x, mask).kernel
            for mode in LAYER_MODES:
                medians = time_alternating(
                    {c: r[mode] for c, r in runners.items()}, repeats
                )
                rows.append(
                    {
                        "backend": backend,
                        "level": "layer",
                        "shape": shape_name,
                        "mode": mode,
                        "mask": mask_kind,
                        "kernel": kernel,
                        **medians,
                    }
                )
                # As they come (a long run that is cut short keeps them).
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# -- train step, loss on the last output only --------------------------------


def last(backend, repeats):
    import keras

    from keras_lstm import convert

    torch = _torch()
    rows = []
    for shape_name, shape in bench_util.SHAPES.items():
        batch, timesteps, features, units = shape
        rng = np.random.default_rng(6)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        y = rng.normal(size=(batch, units)).astype("float32")
        models = {}
        for contender in ("keras", "keras_lstm"):
            models[contender] = keras.Sequential(
                [
                    keras.Input(batch_shape=(batch, timesteps, features)),
                    _lstm_class(contender)(units),
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
            _lstm_class(contender)(units),
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
    torch = _torch()
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
        _median_rows(
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
        bench_util.sync()
        times.append(time.perf_counter() - start)
    return times


# -- first call, in a fresh process -------------------------------------------


def _first_call_worker(contender):
    """In a fresh process: build, first predict, first train step and one
    at a new length; prints the seconds."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 50, 16)).astype("float32")
    x2 = rng.normal(size=(32, 60, 16)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    cls = keras.layers.LSTM
    if contender != "keras":
        import keras_lstm

        cls = keras_lstm.LSTM
    start = time.perf_counter()
    model = keras.Sequential(
        [keras.Input((None, 16)), cls(32), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    model.predict_on_batch(x)
    model.train_on_batch(x, y)
    model.train_on_batch(x2, y)
    print(json.dumps(time.perf_counter() - start))


# A fresh interpreter runs one worker: torch first (before TensorFlow: the
# other order can crash), then this module.
_WORKER = """
import importlib, importlib.util, sys
if importlib.util.find_spec("torch"):
    importlib.import_module("torch")
from keras_lstm import workloads
getattr(workloads, sys.argv[1])(sys.argv[2])
"""


def _in_subprocess(backend, worker, contender):
    """Runs `worker(contender)` in a fresh process on `backend`; its last
    printed line, as JSON."""
    return bench_util.run_json(
        [sys.executable, "-c", _WORKER, worker.__name__, contender],
        backend,
        quiet=True,
    )


def first_call(backend, repeats):
    samples = {"keras": [], "keras_lstm": []}
    for _ in range(repeats):
        for contender in samples:
            samples[contender].append(
                _in_subprocess(backend, _first_call_worker, contender)
            )
    note = "build + predict + train step + train step at a new length"
    return [
        _median_rows(backend, "first call (fresh process)", samples, "s", note)
    ]


# -- step-by-step decoding ----------------------------------------------------


def decode(backend, repeats, steps=100):
    import keras

    rng = np.random.default_rng(1)
    features, units = 32, 128
    x = rng.normal(size=(1, 1, features)).astype("float32")
    runners = {}
    for contender in ("keras", "keras_lstm"):
        layer = _lstm_class(contender)(units, return_state=True)
        layer.build((1, 1, features))
        if contender == "keras_lstm":
            layer.set_weights(runners["keras"][1].get_weights())
        runners[contender] = (
            _decoder(keras.ops.convert_to_tensor(x), layer, units),
            layer,
        )
    torch = _torch()
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
        _median_rows(backend, "greedy decoding, per step", samples, "ms", note)
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

    cls = _lstm_class(contender)
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

    cls = _lstm_class(contender)
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
        rows.append(_median_rows(backend, name, samples, "s", note))
    return rows


# -- mixed precision ----------------------------------------------------------


def mixed(backend, repeats, shape=(64, 100, 128, 256)):
    import keras

    batch, timesteps, features, units = shape
    rng = np.random.default_rng(3)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, timesteps, units)).astype("float32")

    def model(contender, policy):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            layer = _lstm_class(contender)(units, return_sequences=True)
            m = keras.Sequential([keras.Input((timesteps, features)), layer])
        finally:
            keras.config.set_dtype_policy(previous)
        m.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
        return m

    rows = []
    own = model("keras_lstm", "float32")
    for policy in ("mixed_bfloat16", "mixed_float16"):
        models = {
            "keras": model("keras", policy),
            "keras_lstm": model("keras_lstm", policy),
            "keras_lstm float32": own,
        }
        for m in models.values():
            m.set_weights(own.get_weights())
        for mode in ("predict", "train"):
            medians = time_alternating(
                model_runners(models, mode, x, y), repeats
            )
            rows.append(
                {
                    "backend": backend,
                    "workload": f"{policy} {mode}, main shape",
                    "unit": "ms",
                    **medians,
                }
            )
    return rows


# -- configurations off the frameworks' fused ops -----------------------------

CONFIGS = {
    "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
    "recurrent_activation='hard_sigmoid'": {
        "recurrent_activation": "hard_sigmoid"
    },
    "activation='relu'": {"activation": "relu"},
    "unroll=True": {"unroll": True},
    "use_cudnn=False": {"use_cudnn": False},
}


def configs(backend, repeats, shapes=("small", "main")):
    import keras

    rows = []
    for shape_name in shapes:
        batch, timesteps, features, units = bench_util.ALL_SHAPES[shape_name]
        rng = np.random.default_rng(7)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        y = rng.normal(size=(batch, 1)).astype("float32")

        def model(cls, shape=(timesteps, features), units=units, **kwargs):
            m = keras.Sequential(
                [
                    keras.Input(shape),
                    cls(units, **kwargs),
                    keras.layers.Dense(1),
                ]
            )
            m.compile(optimizer="adam", loss="mse")
            return m

        defaults = model(_lstm_class("keras_lstm"))
        for config, kwargs in CONFIGS.items():
            models = {
                "keras": model(_lstm_class("keras"), **kwargs),
                "keras_lstm": model(_lstm_class("keras_lstm"), **kwargs),
                "keras_lstm defaults": defaults,
            }
            for m in models.values():
                m.set_weights(defaults.get_weights())
            for mode in ("predict", "train"):
                medians = time_alternating(
                    model_runners(models, mode, x, y), repeats
                )
                rows.append(
                    {
                        "backend": backend,
                        "workload": f"{config} {mode}, {shape_name}",
                        "unit": "ms",
                        **medians,
                    }
                )
    return rows


# -- jit_compile=True ---------------------------------------------------------


def jit(backend, repeats, shape=(32, 50, 32, 128)):
    import keras

    batch, timesteps, features, units = shape
    rng = np.random.default_rng(5)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    first = {"keras": [], "keras_lstm": [], "keras_lstm generic": []}
    models = {}
    for contender in first:
        layer = _lstm_class(contender)(units)
        if contender == "keras_lstm generic":
            layer = _lstm_class("keras_lstm")(units, use_cudnn=False)
        model = keras.Sequential(
            [keras.Input((timesteps, features)), layer, keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        start = time.perf_counter()
        model.train_on_batch(x, y)
        first[contender].append(time.perf_counter() - start)
        models[contender] = model
    steady = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            steady[name].append((time.perf_counter() - start) * 1e3)
    note = (
        f"batch {batch}, {timesteps} steps, {features} features, {units} units"
    )
    return [
        _median_rows(
            backend, "jit_compile=True, first train step", first, "s", note
        ),
        _median_rows(
            backend, "jit_compile=True, train step", steady, "ms", note
        ),
    ]


# -- long sequences, in a fresh process ---------------------------------------


def _proc_status_mb(key):
    """A /proc/self/status entry in MB (Linux); None elsewhere."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return None


def _gpu_memory_mb(backend):
    """`(in use, peak)` memory of this process's GPU in MB, or None where
    the backend does not say (a missing key, an older API)."""
    mb = 2**20
    try:
        if backend == "torch":  # also torch.nn.LSTM's, on the same GPU
            torch = sys.modules["torch"]
            in_use = torch.cuda.memory_allocated()
            return in_use / mb, torch.cuda.max_memory_allocated() / mb
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats["bytes_in_use"] / mb, stats["peak_bytes_in_use"] / mb
        if backend == "tensorflow":
            import tensorflow as tf

            info = tf.config.experimental.get_memory_info("GPU:0")
            return info["current"] / mb, info["peak"] / mb
    except (AttributeError, KeyError, RuntimeError):
        # An older API, a missing key, an allocator that keeps no stats.
        pass
    return None


def _long_worker(contender):
    """In a fresh process: one 4,000-step train step after a first one;
    prints [seconds, growth of the peak memory in MB or None, what was
    measured: "RSS" (the CPU's resident set) or "GPU"]."""
    import keras

    import keras_lstm
    from keras_lstm import convert

    batch, timesteps, features, units = 16, 4000, 64, 256
    rng = np.random.default_rng(4)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    if contender == "torch.nn":
        torch = _torch()
        layer = keras_lstm.LSTM(units)  # Keras initializers, as the others
        layer.build((None, None, features))
        lstm = to_device(convert.to_torch(layer))
        head = to_device(torch.nn.Linear(units, 1))
        params = list(lstm.parameters()) + list(head.parameters())
        optimizer = torch.optim.SGD(params, 1e-3)
        tx, ty = tensors(x, y)

        def step():
            optimizer.zero_grad()
            _, (h, _) = lstm(tx)
            loss = torch.nn.functional.mse_loss(head(h[0]), ty)
            loss.backward()
            optimizer.step()

    else:
        if contender == "keras":
            layer = keras.layers.LSTM(units)
        else:  # "keras_lstm generic" is the keras.ops path
            if contender == "keras_lstm no flush":
                # torch's CPU kernel with denormals left as they come
                # (it flushes them from FLUSH_FROM_STEPS steps on).
                keras_lstm.backend.kernels.FLUSH_FROM_STEPS = sys.maxsize
            layer = keras_lstm.LSTM(
                units, use_cudnn=contender != "keras_lstm generic"
            )
        model = keras.Sequential(
            [keras.Input((timesteps, features)), layer, keras.layers.Dense(1)]
        )
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")

        def step():
            model.train_on_batch(x, y)

    backend = keras.backend.backend()
    if bench_util.device(backend)[1]:
        # On a GPU the memory that counts is the device's: in use before
        # the steps, and the allocator's peak after them (torch's is reset
        # here; JAX's and TensorFlow's count from this fresh process's
        # start, before any step).
        kind = "GPU"
        if backend == "torch":
            sys.modules["torch"].cuda.reset_peak_memory_stats()
        before = _gpu_memory_mb(backend)
    else:
        # The peak resident set of this process alone: ru_maxrss would
        # start from the parent's (it survives fork and exec), so the
        # high-water mark is reset here and read after the steps.
        kind = "RSS"
        if os.path.exists("/proc/self/clear_refs"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        before = _proc_status_mb("VmRSS")
    step()  # traces, compiles
    start = time.perf_counter()
    step()
    bench_util.sync()
    seconds = time.perf_counter() - start
    if kind == "GPU":
        after = _gpu_memory_mb(backend)
        growth = None if None in (before, after) else after[1] - before[0]
    else:
        peak = _proc_status_mb("VmHWM")
        growth = None if peak is None else peak - before
    print(json.dumps([seconds, growth, kind]))


def long(backend, repeats):
    contenders = ["keras", "keras_lstm"]
    if backend == "torch":
        # The keras.ops path on torch is a Python loop of 4,000 steps under
        # autograd, as keras.layers.LSTM's: minutes a step on a CPU
        # (benchmarks/long_step_memory.py runs it once).
        if _torch() is not None:
            contenders.append("torch.nn")
        if not bench_util.device(backend)[1]:
            contenders.remove("keras")
            # What flushing denormals is worth on this CPU (issue 19).
            contenders.append("keras_lstm no flush")
    else:
        contenders.append("keras_lstm generic")
    seconds = {c: [] for c in contenders}
    memory = {c: [] for c in contenders}
    kind = "RSS"
    for _ in range(repeats):
        for contender in contenders:
            s, mb, kind = _in_subprocess(backend, _long_worker, contender)
            seconds[contender].append(s)
            memory[contender].append(mb)
    name = "long sequence train step (4,000 steps)"
    rows = [_median_rows(backend, name, seconds, "s")]
    # Measured where /proc is (Linux) on a CPU; on a GPU where the
    # backend's allocator reports it; else "n/a".
    measured = {c: v for c, v in memory.items() if None not in v}
    note = {
        "RSS": "growth of the peak resident set over the step",
        "GPU": "peak GPU memory in use over the steps, less that before",
    }[kind]
    if not measured:
        note = f"n/a: {kind} peak not reported here"
    if measured or kind == "GPU":
        rows.append(
            _median_rows(backend, name + ", peak memory", measured, "MB", note)
        )
    return rows


def run(backend, workloads, repeats, shapes=None):
    """The rows of `workloads` on this process's backend.

    Args:
        backend: this process's Keras backend.
        workloads: names from `WORKLOADS`.
        repeats: timed runs of each contender per row (`long`: a third).
        shapes: names from `bench_util.ALL_SHAPES` for `layer` (default
            main, large and, on a GPU, xlarge).

    Returns:
        The rows; a workload that raises gives one row whose note is the
        error (its traceback goes to stderr), and the others still run.
    """
    rows = []
    for workload in workloads:
        repeats_here = max(1, repeats // 3) if workload == "long" else repeats
        kwargs = {}
        if workload in ("layer", "configs") and shapes:
            kwargs["shapes"] = shapes
        try:
            new = globals()[workload](backend, repeats_here, **kwargs)
        except Exception as error:  # one failure must not lose the rest
            traceback.print_exc()
            new = [error_row(backend, workload, error)]
        for row in new:
            if workload != "layer" or row.get("error"):  # (layer printed)
                print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def error_row(backend, workload, error):
    """The row of a workload that raised `error`."""
    return {
        "backend": backend,
        "workload": f"{workload} (failed)",
        "unit": "ms",
        "note": f"{type(error).__name__}: {error}"[:300].replace("\n", " "),
        "error": True,
    }
