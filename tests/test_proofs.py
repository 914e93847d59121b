"""Every proof script in fast mode, and the ``geomkfac prove`` runner and CLI."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap

import pytest

from geomkfac import cli
from geomkfac.errors import ConfigurationError
from geomkfac.prove import (
    ProofResult,
    discover,
    find_proofs_dir,
    format_markdown,
    format_table,
    run_proof,
    select,
)

PROOFS = discover()


def test_every_statement_of_the_mlp_theory_has_a_proof():
    ids = {run_id for run_id in (p.read_text(encoding="utf-8") for p in PROOFS)}
    text = "\n".join(ids)
    for proof_id in ("B.1", "B.2", "C.1/C.2", "D.2/D.3", "Lemma E.1", "Thm 3.2", "Thm 3.4",
                     "Prop 3.5", "Ex. 3.3", "Thm 3.8", "Thm 2.1", "§2.1"):
        assert f'ID = "{proof_id}"' in text, f"no proof script for {proof_id}"


@pytest.mark.parametrize("path", PROOFS, ids=[p.stem for p in PROOFS])
def test_proof_holds_and_its_negative_control_fails(path):
    result = run_proof(path, fast=True)
    assert result.error is None, result.error
    assert result.holds, f"{result.id} does not hold: {result.details}"
    assert result.negative_fails, f"{result.id}: negative control did not fail: {result.details}"
    assert math.isfinite(result.discrepancy) and math.isfinite(result.negative_discrepancy)


_OWN_MECHANICS = ("def backprop", "class Adam", "def kfac_factors", "def kfac_direction",
                  ".jacobian(zs[")


def _own_mechanics(text):
    return [m for m in _OWN_MECHANICS if m in text]


def test_proofs_train_with_the_shipped_backend_not_their_own():
    """One network description, two readings: the proof scripts take backpropagation, K-FAC
    factors and optimizers from geomkfac.nn, they do not re-implement them; control: the
    check flags a script that does."""
    for path in PROOFS + [PROOFS[0].parent / "_pipeline.py"]:
        assert _own_mechanics(path.read_text(encoding="utf-8")) == [], path.name
    assert "get_optimizer" in (PROOFS[0].parent / "thm2_1_kfac_invariance.py").read_text("utf-8")
    assert _own_mechanics("def backprop(net, trace, d_out):\n    ...") == ["def backprop"]


# ------------------------------------------------------------------ runner on fake proofs

_GOOD = '''
ID = "Z.1"
STATEMENT = "two plus two is four"
METHOD = "symbolic"

def check(fast=False):
    import sympy as sp
    d = sp.simplify(sp.Integer(2) + 2 - 4)
    wrong = sp.simplify(sp.Integer(2) + 2 - 5)
    return {"holds": d == 0, "discrepancy": float(abs(d)),
            "negative_control": "two plus two is five",
            "negative_discrepancy": float(abs(wrong)), "negative_fails": wrong != 0,
            "details": {"2 + 2 - 4": str(d)}}

if __name__ == "__main__":
    from geomkfac.prove import run_script
    raise SystemExit(run_script(__file__))
'''

_FALSE = '''
ID = "Z.2"
STATEMENT = "two plus two is five"
METHOD = "numeric"

def check(fast=False):
    d = abs(2.0 + 2.0 - 5.0)
    return {"holds": d < 1e-12, "discrepancy": d, "negative_control": "none",
            "negative_discrepancy": 1.0, "negative_fails": True, "details": {}}
'''

_CONTROL_HOLDS = '''
ID = "Z.3"
STATEMENT = "a control that does not fail"
METHOD = "numeric"

def check(fast=False):
    return {"holds": True, "discrepancy": 0.0, "negative_control": "also true",
            "negative_discrepancy": 0.0, "negative_fails": False, "details": {}}
'''

_RAISES = '''
ID = "Z.4"
STATEMENT = "a proof that raises"
METHOD = "numeric"

def check(fast=False):
    raise RuntimeError("boom")
'''


@pytest.fixture
def fake_dir(tmp_path):
    def make(**scripts):
        for name, body in scripts.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")
        return tmp_path
    return make


def test_runner_reports_a_holding_proof(fake_dir):
    d = fake_dir(z1_good=_GOOD)
    (r,) = [run_proof(p) for p in discover(d)]
    assert (r.id, r.method, r.holds, r.negative_fails, r.passed) == ("Z.1", "symbolic", True,
                                                                      True, True)
    assert r.discrepancy == 0.0 and r.negative_discrepancy == 1.0


@pytest.mark.parametrize("body, status, neg_status", [
    (_FALSE, "FAILS", "fails"),
    (_CONTROL_HOLDS, "holds", "DID NOT FAIL"),
    (_RAISES, "ERROR", "ERROR"),
])
def test_runner_marks_failures(fake_dir, body, status, neg_status):
    (path,) = discover(fake_dir(z_bad=body))
    r = run_proof(path)
    assert not r.passed
    assert (r.status, r.negative_status) == (status, neg_status)
    if status == "ERROR":
        assert "boom" in r.error


def test_cli_prove_one_fast_proof_exits_zero(capsys):
    assert cli.main(["prove", "§2.1", "--fast", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "§2.1" in out and "holds" in out


def test_cli_prove_fails_on_a_failing_proof_and_writes_report(fake_dir, tmp_path, capsys):
    d = fake_dir(z1_good=_GOOD, z2_false=_FALSE, z4_raises=_RAISES)
    report = tmp_path / "report.md"
    code = cli.main(["prove", "--dir", str(d), "--report", str(report), "--quiet"])
    assert code != 0
    out = capsys.readouterr().out
    assert "Z.1" in out and "Z.2" in out and "ERROR" in out
    md = report.read_text(encoding="utf-8")
    assert md.startswith("| id | statement |")
    assert "| Z.1 | two plus two is four | symbolic | holds | 0 | fails |" in md
    assert "| Z.2 |" in md and "FAILS" in md


def test_cli_prove_passing_dir_exits_zero(fake_dir):
    d = fake_dir(z1_good=_GOOD)
    assert cli.main(["prove", "--dir", str(d), "--quiet"]) == 0


def test_cli_unknown_id_and_missing_dir_are_configuration_errors(fake_dir, tmp_path, capsys):
    d = fake_dir(z1_good=_GOOD)
    assert cli.main(["prove", "Q.9", "--dir", str(d), "--quiet"]) == 2
    assert "no proof with id" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="--dir"):
        find_proofs_dir(tmp_path / "nowhere")


def test_select_matches_ids_by_normalized_prefix(fake_dir):
    d = fake_dir(a=_GOOD.replace('"Z.1"', '"Thm 2.1"'), b=_GOOD.replace('"Z.1"', '"§2.1"'),
                 c=_GOOD.replace('"Z.1"', '"C.1/C.2"'), e=_GOOD.replace('"Z.1"', '"Lemma E.1"'))
    paths = discover(d)
    names = lambda sel: sorted(p.stem for p in select(paths, sel))  # noqa: E731
    assert names(["2.1"]) == ["a"]
    assert names(["thm 2.1"]) == ["a"]
    assert names(["§2.1"]) == ["b"] and names(["sec2.1"]) == ["b"]
    assert names(["c.2"]) == ["c"] and names(["C"]) == ["c"]
    assert names(["e.1"]) == ["e"]
    assert names([]) == ["a", "b", "c", "e"]


def test_script_runs_alone_and_exit_code_follows_result(fake_dir):
    d = fake_dir(z1_good=_GOOD)
    proc = subprocess.run([sys.executable, str(d / "z1_good.py"), "--fast"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "two plus two is four" in proc.stdout and "2 + 2 - 4: 0" in proc.stdout
    bad = fake_dir(z2_false=_FALSE + _GOOD[_GOOD.index("if __name__"):])
    proc = subprocess.run([sys.executable, str(bad / "z2_false.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FAILS" in proc.stdout


def test_table_formats():
    r = ProofResult("X.1", "s", "numeric", True, 1.5e-15, "c", 0.25, True, 0.5, {})
    bad = ProofResult("X.2", "t", "numeric", False, 0.5, "c", 0.0, False, 0.5, {})
    text = format_table([r, bad])
    assert "1.5e-15" in text and "2.5e-01" in text and "FAILS" in text
    assert "1/2 statements hold" in text
    assert format_markdown([r]).count("\n| X.1 |") == 1


def test_default_proofs_dir_is_found():
    assert find_proofs_dir().is_dir() and PROOFS


def test_cli_prove_writes_latex(fake_dir, tmp_path, capsys):
    from test_display import check_math  # the same well-formedness checker as the displays

    d = fake_dir(z1_good=_GOOD, z2_false=_FALSE, z4_raises=_RAISES)
    out = tmp_path / "proofs.tex"
    assert cli.main(["prove", "--dir", str(d), "--latex", str(out), "--quiet"]) != 0
    tex = out.read_text(encoding="utf-8")
    assert tex.startswith(r"\documentclass{article}") and tex.rstrip().endswith(r"\end{document}")
    assert r"Z.1 & two plus two is four & symbolic & holds & 0 & fails" in tex
    assert r"\subsection*{Z.4: a proof that raises}" in tex and "The proof raised" in tex
    assert all(ord(ch) < 128 for ch in tex)
    # every math span is well-formed math; the whole text has balanced braces
    for span in re.findall(r"\$([^$]*)\$", tex):
        check_math(span)
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")


def test_latex_escape():
    from geomkfac.prove import latex_escape

    assert latex_escape("a_b & 5% {x}") == r"a\_b \& 5\% \{x\}"
    assert latex_escape("ι → κ") == r"$\iota$ $\to$ $\kappa$"
