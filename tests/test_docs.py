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
    # A page whose blocks were all skipped has tested nothing.
    assert len(blocks) > sum(
        1
        for code in blocks
        if any(
            importlib.util.find_spec(m) is None for m in REQUIRES.findall(code)
        )
    )


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
