"""Builds the sdist and wheel, checks them with twine, installs the wheel
into a clean virtual environment and runs a layer there (tox env
`package`).

    python .ci/check_package.py WORKDIR
"""

import glob
import os
import subprocess
import sys
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = """
import numpy as np
import keras_lstm
assert keras_lstm.__file__.startswith(sys.prefix), keras_lstm.__file__
layer = keras_lstm.LSTM(4, return_state=True)
out, h, c = layer(np.zeros((2, 5, 3), "float32"))
assert tuple(out.shape) == (2, 4)
plan = keras_lstm.explain(layer, np.zeros((2, 5, 3)))
print("keras_lstm", keras_lstm.__version__, plan.kernel)
"""


def run(*args, **kwargs):
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, **kwargs)


def main(work):
    dist = os.path.join(work, "dist")
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    sdist = glob.glob(os.path.join(dist, "*.tar.gz"))
    wheel = glob.glob(os.path.join(dist, "*.whl"))
    assert len(sdist) == len(wheel) == 1, os.listdir(dist)
    run(sys.executable, "-m", "twine", "check", "--strict", *sdist, *wheel)
    # The sdist carries the tests and tox.ini, so a packager can run them.
    with tarfile.open(sdist[0]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "tox.ini",
        "conftest.py",
        "tests/oracle.py",
        "tests/fixtures/model_0_2_0.keras",
        "tests/fixtures/model_0_2_0.weights.h5",
        "tests/fixtures/outputs_0_2_0.npz",
        "docs/index.md",
    ):
        assert needed in names, f"the sdist lacks {needed}"
    # The command line's subpackages are in the wheel.
    with zipfile.ZipFile(wheel[0]) as whl:
        files = set(whl.namelist())
    for needed in ("keras_lstm/tools/cli.py", "keras_lstm/tools/bench/util.py"):
        assert needed in files, f"the wheel lacks {needed}"
    venv = os.path.join(work, "clean")
    run(sys.executable, "-m", "venv", venv)
    python = os.path.join(venv, "bin", "python")
    # torch, pinned: the CPU build (an unpinned torch pulls a CUDA one).
    run(python, "-m", "pip", "install", "--quiet", wheel[0] + "[torch]")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["KERAS_BACKEND"] = "torch"
    run(python, "-c", "import sys\n" + SMOKE, cwd=work, env=env)
    run(os.path.join(venv, "bin", "keras-lstm"), "--version", env=env)


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
