"""Workloads for the benchmark: what a user's whole experience costs.

The steady-state table (steady.py) times warmed-up calls at fixed
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
torch.nn.LSTM on CUDA wherever torch sees it (util.torch_device), its
timings closed by torch.cuda.synchronize (util.sync).

This module lists the workloads and runs them; each is a function of its
name in the module of its theme: layer_level.py (`layer`), models.py
(`last`, `dynamic`, `decode`, `fit`), settings.py (`mixed`, `configs`,
`jit`) and processes.py (`first_call`, `long`); contenders.py holds what
they share.
"""

import json
import sys
import traceback

from keras_lstm.tools.bench import layer_level, models, processes, settings

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
# Each workload: a function of that name in its module.
_MODULES = {
    "layer": layer_level,
    "last": models,
    "dynamic": models,
    "first_call": processes,
    "decode": models,
    "fit": models,
    "mixed": settings,
    "jit": settings,
    "configs": settings,
    "long": processes,
}


def run(backend, workloads, repeats, shapes=None):
    """The rows of `workloads` on this process's backend.

    Args:
        backend: this process's Keras backend.
        workloads: names from `WORKLOADS`.
        repeats: timed runs of each contender per row (`long`: a third).
        shapes: names from `util.ALL_SHAPES` for `layer` (default
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
            function = getattr(_MODULES[workload], workload)
            new = function(backend, repeats_here, **kwargs)
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
