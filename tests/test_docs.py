"""Documentation that cannot rot: every Python block of README.md and
docs/*.md runs, page by page, on the current backend; the docstring
examples of the public API run as doctests.

A page's blocks share one namespace, in order, in a temporary directory. A
block whose first lines say `# requires: <module>` is skipped where that
module is not installed (the torch converters on TensorFlow and JAX).
"""

import doctest
import importlib.util
import pathlib
import re

import keras
import numpy as np
import pytest

import keras_lstm
from keras_lstm import convert, dispatch
from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
REQUIRES = re.compile(r"^\s*(?:>>> )?# requires: (\w+)", re.M)


def _blocks(page):
    return BLOCK.findall(page.read_text())


def test_every_page_is_collected():
    assert {p.name for p in PAGES} >= {"README.md", "index.md", "kernels.md"}
    assert sum(len(_blocks(p)) for p in PAGES) >= 12


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = _blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no Python block")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        missing = [
            m
            for m in REQUIRES.findall(code)
            if importlib.util.find_spec(m) is None
        ]
        if missing:
            continue  # and so are the blocks after it that use its names
        exec(
            compile(code, f"{page.name}, Python block {i + 1}", "exec"),
            namespace,
        )
    # A page whose blocks were all skipped has tested nothing: a skip, not a
    # pass (export.md's blocks need onnxruntime, which only the three
    # backend envs install).
    skipped = sum(
        1
        for code in blocks
        if any(
            importlib.util.find_spec(m) is None for m in REQUIRES.findall(code)
        )
    )
    if skipped == len(blocks):
        pytest.skip(f"every Python block of {page.name} needs a module missing")


DOCUMENTED = [
    keras_lstm.LSTM,
    keras_lstm.Bidirectional,
    keras_lstm.BucketedSequences,
    keras_lstm.explain,
    dispatch.Plan,
    convert.from_torch,
    convert.to_torch,
    convert.from_cudnn,
    convert.to_cudnn,
    convert.replace_keras_lstm,
]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda o: o.__name__)
def test_docstring_examples_run(obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert obj.__doc__, f"{obj.__name__} has no docstring"
    finder = doctest.DocTestFinder(recurse=False)
    globs = {"np": np, "keras": keras, "keras_lstm": keras_lstm}
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    tests = finder.find(obj, obj.__name__, globs=globs)
    assert any(test.examples for test in tests), f"{obj.__name__}: no example"
    for test in tests:
        missing = [
            m
            for m in REQUIRES.findall(test.docstring)
            if importlib.util.find_spec(m) is None
        ]
        if missing:
            pytest.skip(f"the example needs {missing}")
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0


# docs/distribution.md: a recipe is a Python block whose first lines are
# `# requires: MODULE` and `# FILE.py ...`, followed by a sh block whose
# lines (`python ...`, `&` to go on) start the processes.
RECIPE = re.compile(
    r"^```python\n(# requires: (\w+)\n# (\w+\.py)\b.*?)^```\s*"
    r"^```sh\n(.*?)^```",
    re.S | re.M,
)
PORT = re.compile(r"(?<=127\.0\.0\.1:)\d+|(?<=--master-port )\d+")


def _recipes():
    page = (ROOT / "docs" / "distribution.md").read_text()
    return {m[1]: (m[0], m[2], m[3]) for m in RECIPE.findall(page)}


def test_distribution_has_a_recipe_per_backend():
    assert set(_recipes()) == {"torch", "jax", "tensorflow"}


def test_distribution_recipe_runs(tmp_path):
    """The active backend's recipe, as the page says to start it (free
    ports in place of the page's): every process ends with the same
    weights, on a fused kernel."""
    import os
    import shlex
    import signal
    import socket
    import subprocess
    import sys
    import time

    backend = keras.backend.backend()
    if backend == "jax" and not helpers.keras_fits_numpy_per_process():
        pytest.skip(
            f"Keras {keras.version()} fits only a tf.data.Dataset under a "
            "multi-process distribution (no auto_shard_dataset)"
        )
    script, name, launch = _recipes()[backend]
    (tmp_path / name).write_text(script)
    ports = {}
    sockets = []
    for port in PORT.findall(launch):
        if port not in ports:
            sockets.append(socket.socket())
            sockets[-1].bind(("127.0.0.1", 0))
            ports[port] = str(sockets[-1].getsockname()[1])
    for s in sockets:
        s.close()
    launch = PORT.sub(lambda m: ports[m[0]], launch)
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    commands = [
        shlex.split(line.removesuffix("&"))
        for line in launch.splitlines()
        if line.startswith("python ")
    ]
    processes = []
    logs = [open(tmp_path / f"{i}.log", "w+") for i in range(len(commands))]
    try:
        for argv, log in zip(commands, logs, strict=True):
            processes.append(
                subprocess.Popen(
                    [sys.executable, *argv[1:]],
                    cwd=tmp_path,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in processes):
            if time.monotonic() > deadline or any(
                p.returncode not in (None, 0) for p in processes
            ):
                break
            time.sleep(0.1)
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    output = ""
    for log in logs:
        log.seek(0)
        output += log.read()
        log.close()
    assert [p.returncode for p in processes] == [0] * len(commands), output
    # Not line by line: the processes of torch.distributed.run share one
    # stdout, and their lines may interleave.
    lines = re.findall(
        r"process (\d+): kernel ([\w-]+), weights (\d+\.\d{6})", output
    )
    assert sorted(int(rank) for rank, _, _ in lines) == [0, 1], output
    assert {kernel for _, kernel, _ in lines} <= {
        "torch-cpu",
        "torch-cudnn",
        "jax-scan",
        "jax-cudnn",
        "tensorflow-loop",
        "tensorflow-cudnn",
    }, output
    assert len({weights for _, _, weights in lines}) == 1, output
