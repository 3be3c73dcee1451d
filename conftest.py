"""Test-session setup shared by every backend.

The backend comes from KERAS_BACKEND (tox sets it per environment). torch is
imported before TensorFlow when both are installed: the other order can crash.
"""

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401

import keras  # noqa: E402


def _has_gpu() -> bool:
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def pytest_addoption(parser):
    parser.addoption(
        "--emulate-cudnn",
        action="store_true",
        help="JAX: run the jax-cudnn kernel on the CPU, its cuDNN call "
        "replaced by jax.experimental.rnn's reference with cuDNN's input "
        "contract asserted (tests/cudnn_emulation.py); gpu-marked tests "
        "run too",
    )


def _emulating(config) -> bool:
    return (
        config.getoption("--emulate-cudnn")
        and keras.backend.backend() == "jax"
        and not _has_gpu()
    )


def pytest_configure(config):
    if _emulating(config):
        from tests import cudnn_emulation

        cudnn_emulation.install(setattr)


def pytest_report_header(config):
    header = f"keras {keras.__version__}, backend {keras.backend.backend()}"
    if _emulating(config):
        header += ", cuDNN emulated on CPU (--emulate-cudnn)"
    return header


def pytest_collection_modifyitems(config, items):
    if _has_gpu() or _emulating(config):
        return
    skip = pytest.mark.skip(reason="needs a GPU; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True)
def _full_float32():
    """Every test compares float32 numbers at full float32 precision: on a
    GPU, cuDNN and the matmuls of the keras.ops path may otherwise round
    float32 products to TF32 (each framework's default), errors near 1e-3
    that would drown the suite's 1e-5. On CPU this changes nothing."""
    import keras_lstm

    with keras_lstm.full_float32():
        yield


# Property-based tests (tests/test_properties.py): a fixed, derandomized
# profile in CI; KERAS_LSTM_HYPOTHESIS=long searches longer, at random.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis comes with the test extras
    pass
else:
    _common = dict(
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
        print_blob=True,
    )
    settings.register_profile(
        "ci", derandomize=True, max_examples=20, database=None, **_common
    )
    settings.register_profile("long", max_examples=400, **_common)
    settings.load_profile(os.environ.get("KERAS_LSTM_HYPOTHESIS", "ci"))
