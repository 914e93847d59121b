"""The teaching notebooks in ``examples/notebooks`` run, so they cannot rot.

Every ``*.ipynb`` there is found automatically, checked to be a valid nbformat-4 notebook
(by hand, against the essentials of the nbformat 4 schema: no dependency) with its outputs
stripped, and executed: its code cells in order, in one namespace, with the non-interactive
matplotlib backend and a fresh temporary directory as working directory. Any exception fails
the test, with the notebook and cell in the traceback. The runner itself is checked on
notebooks made to fail.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


class NotebookError(AssertionError):
    """A notebook is not a valid, output-free nbformat-4 notebook."""


def _source(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def check_notebook(nb: dict, name: str = "notebook") -> None:
    """Raise NotebookError unless ``nb`` (parsed JSON) is an nbformat-4 notebook whose code
    cells are plain Python with no outputs and no execution counts."""

    def bad(msg):
        raise NotebookError(f"{name}: {msg}")

    if not isinstance(nb, dict):
        bad("the top level must be a JSON object")
    for key in ("cells", "metadata", "nbformat", "nbformat_minor"):
        if key not in nb:
            bad(f"missing top-level key {key!r}")
    if nb["nbformat"] != 4 or not isinstance(nb["nbformat_minor"], int) or nb["nbformat_minor"] < 0:
        bad(f"nbformat must be 4 with an integer minor version, got {nb['nbformat']}.{nb['nbformat_minor']}")
    if not isinstance(nb["metadata"], dict) or not isinstance(nb["cells"], list):
        bad("metadata must be an object and cells a list")
    ids = []
    for i, cell in enumerate(nb["cells"]):
        where = f"cell {i}"
        if not isinstance(cell, dict):
            bad(f"{where} is not an object")
        kind = cell.get("cell_type")
        if kind not in ("code", "markdown", "raw"):
            bad(f"{where}: cell_type must be code, markdown or raw, got {kind!r}")
        if not isinstance(cell.get("metadata"), dict):
            bad(f"{where}: missing metadata object")
        src = cell.get("source")
        if not (isinstance(src, str) or (isinstance(src, list) and all(isinstance(s, str) for s in src))):
            bad(f"{where}: source must be a string or a list of strings")
        allowed = {"cell_type", "metadata", "source", "id", "attachments"}
        if kind == "code":
            allowed |= {"outputs", "execution_count"}
            if "outputs" not in cell or "execution_count" not in cell:
                bad(f"{where}: a code cell needs outputs and execution_count")
            if cell["outputs"] != [] or cell["execution_count"] is not None:
                bad(f"{where}: outputs are not stripped (clear them before committing)")
            for line in _source(cell).splitlines():
                if line.lstrip().startswith(("%", "!")):
                    bad(f"{where}: IPython magic or shell escape {line.strip()!r}; use plain Python")
        extra = set(cell) - allowed
        if extra:
            bad(f"{where}: unexpected keys {sorted(extra)}")
        if nb["nbformat_minor"] >= 5:
            cid = cell.get("id")
            if not isinstance(cid, str) or not _CELL_ID.match(cid):
                bad(f"{where}: nbformat 4.5 needs a cell id of 1-64 letters, digits, - or _, got {cid!r}")
            ids.append(cid)
    if len(set(ids)) != len(ids):
        bad("cell ids are not unique")
    if not any(c["cell_type"] == "code" for c in nb["cells"]):
        bad("no code cell")


def run_notebook(path: Path) -> dict:
    """Execute the code cells of ``path`` in order in one namespace; returns the namespace.
    An exception propagates, its traceback naming ``<path> cell <i>``."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    check_notebook(nb, path.name)
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            exec(compile(_source(cell), f"{path.name} cell {i}", "exec"), namespace)
    return namespace


def _notebooks():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Agg backend, a fresh working directory; figures closed afterwards."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    yield tmp_path
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_notebooks_are_found():
    names = [p.name for p in _notebooks()]
    assert "metric_in_two_frames.ipynb" in names, names


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs(path, sandbox):
    """Every cell runs without an exception (the notebooks check their claims with asserts)."""
    start = time.perf_counter()
    namespace = run_notebook(path)
    seconds = time.perf_counter() - start
    assert set(namespace) - {"__name__", "__builtins__"}, f"{path.name} defined nothing"
    print(f"{path.name}: {seconds:.1f} s")


# --------------------------------------------------------------------------- the runner fails when it should


def _write(tmp_path, cells, **top):
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5, **top}
    path = tmp_path / "t.ipynb"
    path.write_text(json.dumps(nb))
    return path


def _code(src, i="a", **kw):
    return {"cell_type": "code", "id": i, "metadata": {}, "source": src, "execution_count": None,
            "outputs": [], **kw}


def test_runner_shares_one_namespace_and_reports_the_failing_cell(tmp_path, sandbox):
    ok = _write(tmp_path, [_code("x = 2\n", "a"), _code(["y = x *", " 3\n"], "b")])
    assert run_notebook(ok)["y"] == 6
    failing = _write(tmp_path, [_code("x = 1", "a"), _code("assert x == 2, 'wrong'", "b")])
    with pytest.raises(AssertionError, match="wrong") as exc:
        run_notebook(failing)
    assert any("t.ipynb cell 1" in str(tb.path) for tb in exc.traceback)


@pytest.mark.parametrize(
    "cells, top, message",
    [
        ([_code("1", outputs=[{"output_type": "stream", "name": "stdout", "text": "1"}])], {}, "not stripped"),
        ([_code("1", execution_count=3)], {}, "not stripped"),
        ([_code("%matplotlib inline")], {}, "magic"),
        ([{"cell_type": "code", "id": "a", "metadata": {}, "source": "1"}], {}, "needs outputs"),
        ([{"cell_type": "heading", "id": "a", "metadata": {}, "source": "x"}], {}, "cell_type"),
        ([_code("1", "a"), _code("2", "a")], {}, "not unique"),
        ([_code("1", "bad id!")], {}, "cell id"),
        ([_code("1")], {"nbformat": 3}, "nbformat must be 4"),
        ([{"cell_type": "markdown", "id": "a", "metadata": {}, "source": "x"}], {}, "no code cell"),
        ([_code("1", extra=1)], {}, "unexpected keys"),
    ],
)
def test_checker_rejects(tmp_path, cells, top, message):
    with pytest.raises(NotebookError, match=message):
        run_notebook(_write(tmp_path, cells, **top))
