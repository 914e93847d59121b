"""The README's examples run as shown (so its set-up section stays true)."""

import doctest
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_doctest_examples_pass():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_readme_training_snippet_runs_and_lowers_the_loss():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "get_optimizer" in b)
    snippet = snippet.replace("range(100)", "range(10)")  # same code, fewer steps
    namespace = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    nn, data = namespace["nn"], namespace["data"]
    initial = nn.MLP([64, 128, 64, 32, 64, 128, 64], "tanh", seed=0)
    before = nn.get_loss("bernoulli").value(initial.forward(data.X[:256]), data.Y[:256])
    info = namespace["info"]  # the loss before the tenth step, i.e. after nine updates
    assert np.isfinite(info.loss)
    assert info.loss < 0.85 * before


def test_readme_layer_snippet_runs():
    """The Sequential/CNN example runs and prints the scales T it claims."""
    import contextlib
    import io

    text = README.read_text(encoding="utf-8")
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
                   if "nn.Sequential" in b)
    out = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, str(README), "exec"), namespace)
    assert out.getvalue().strip() == "[64, 1]"
    assert np.isfinite(namespace["info"].loss)
