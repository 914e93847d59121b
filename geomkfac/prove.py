"""Run the paper's statements as programs: the ``geomkfac prove`` table.

Every statement of the paper that geomkfac checks has one script ``proofs/<name>.py``.
A proof script defines

``ID``
    the statement's id in the paper (``"B.1"``, ``"Thm 3.2"``, ``"§2.1"`` ...);
``STATEMENT``
    the statement, in one sentence;
``METHOD``
    ``"symbolic"`` (exact: a difference simplified to zero), ``"numeric"`` (float64,
    several random seeds) or ``"symbolic+numeric"``;
``check(fast=False) -> dict``
    computes the statement and its *negative control* (a nearby claim that is false and
    must be seen failing) and returns a dict with keys ``holds``, ``discrepancy``,
    ``negative_control``, ``negative_discrepancy``, ``negative_fails`` and ``details``.
    ``holds`` and ``negative_fails`` are decided inside ``check`` against stated
    tolerances.

and ends with::

    if __name__ == "__main__":
        from geomkfac.prove import run_script
        raise SystemExit(run_script(__file__))

so that ``python proofs/<name>.py [--fast]`` prints the statement, what it computed and
the measured discrepancies, and exits non-zero on failure.

This module discovers the scripts, runs them (:func:`run_proof`, :func:`run_proofs`),
formats the table (:func:`format_table`, :func:`format_markdown`) and provides the
``geomkfac prove`` subcommand (:func:`add_parser`).

Examples
--------
>>> r = ProofResult("X.1", "one equals one", "symbolic", True, 0.0,
...                 "one equals two", 1.0, True, 0.01, {})
>>> r.passed, r.status
(True, 'holds')
>>> r2 = ProofResult("X.2", "a false claim", "numeric", False, 0.5,
...                  "control", 0.5, False, 0.01, {})
>>> r2.passed, r2.status, r2.negative_status
(False, 'FAILS', 'DID NOT FAIL')
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from geomkfac.cli import positive_int
from geomkfac.errors import ConfigurationError

__all__ = [
    "ProofResult",
    "STATEMENT_ORDER",
    "PAPER_STATEMENTS",
    "coverage",
    "format_coverage",
    "find_proofs_dir",
    "discover",
    "load_proof",
    "select",
    "run_proof",
    "run_proofs",
    "format_table",
    "format_markdown",
    "run_script",
    "add_parser",
]

#: Ids in the order of paper-notes §4; the table lists proofs in this order, others after.
STATEMENT_ORDER: tuple[str, ...] = (
    "B.1",
    "B.2",
    "B.3 covectors",
    "B.3 composition",
    "B.4",
    "B.5 sharp",
    "C.1/C.2",
    "D.2/D.3",
    "Lemma E.1",
    "Rem 3.1",
    "Thm 3.2",
    "Thm 3.4",
    "Prop 3.5",
    "Ex. 3.3",
    "Thm 3.8",
    "Thm 2.1",
    "§1",
    "§2.1",
    "§3 sympy = NumPy",
    "F.1–F.3",
    "F.4",
    "Eqn. 4.4/F.5",
    "Thm F.3",
    "Thm 4.1",
    "G.1/G.2",
    "Eqn. 4.7/G.3",
    "Thm G.3",
    "Thm 4.2",
)

#: The statements of the paper that must each have a proof (paper-notes §4, with §1's claim
#: on permutations of the weight entries and Remark 3.1): the coverage
#: that ``geomkfac prove`` reports.  Rows beyond these (laws of the core, controls the issue
#: tracker asked for, the convolution and recurrent equations) are listed in the table too.
PAPER_STATEMENTS: tuple[str, ...] = (
    "B.1", "B.2", "C.1/C.2", "D.2/D.3", "Lemma E.1", "Thm 3.2", "Thm 3.4", "Prop 3.5",
    "Ex. 3.3", "Thm 3.8", "Thm 2.1", "§2.1", "Thm 4.1", "Thm F.3", "Thm 4.2", "Thm G.3",
    "§1", "Rem 3.1",
)

_REQUIRED_KEYS = ("holds", "discrepancy", "negative_control", "negative_discrepancy",
                  "negative_fails")
_METHODS = ("symbolic", "numeric", "symbolic+numeric")


@dataclass(frozen=True)
class ProofResult:
    """The outcome of one proof script.

    Parameters
    ----------
    id, statement, method : str
        The script's ``ID``, ``STATEMENT`` and ``METHOD``.
    holds : bool
        Whether the statement was verified within the script's stated tolerance.
    discrepancy : float
        The largest measured discrepancy of the statement (0 for an exact symbolic proof).
    negative_control : str
        What the negative control computes.
    negative_discrepancy : float
        The discrepancy measured for the negative control.
    negative_fails : bool
        Whether the negative control failed, as it must.
    seconds : float
        Wall-clock time of ``check``.
    details : dict
        What the script computed (printed by :func:`run_script`); an ``"error"`` entry
        holds the traceback of a proof that raised.
    """

    id: str
    statement: str
    method: str
    holds: bool
    discrepancy: float
    negative_control: str
    negative_discrepancy: float
    negative_fails: bool
    seconds: float
    details: dict = field(default_factory=dict, compare=False)

    @property
    def error(self) -> str | None:
        """The traceback if the proof raised instead of returning, else ``None``."""
        return self.details.get("error")

    @property
    def passed(self) -> bool:
        """True when the statement holds *and* its negative control fails."""
        return self.error is None and bool(self.holds) and bool(self.negative_fails)

    @property
    def status(self) -> str:
        """``"holds"``, ``"FAILS"`` or ``"ERROR"``."""
        if self.error is not None:
            return "ERROR"
        return "holds" if self.holds else "FAILS"

    @property
    def negative_status(self) -> str:
        """``"fails"`` (as it must), ``"DID NOT FAIL"`` or ``"ERROR"``."""
        if self.error is not None:
            return "ERROR"
        return "fails" if self.negative_fails else "DID NOT FAIL"


# ----------------------------------------------------------------------------- discovery


def find_proofs_dir(directory: str | Path | None = None) -> Path:
    """The directory holding the proof scripts.

    Parameters
    ----------
    directory : path, optional
        An explicit directory (``geomkfac prove --dir``); default: ``proofs/`` beside the
        package source, i.e. the repository root of a source checkout or editable install.

    Raises
    ------
    ConfigurationError
        If the directory does not exist.

    Examples
    --------
    >>> find_proofs_dir().name
    'proofs'
    """
    if directory is not None:
        path = Path(directory)
        if not path.is_dir():
            raise ConfigurationError(
                f"proofs directory {str(path)!r} does not exist; pass --dir with the "
                "folder that holds the proof scripts (proofs/ in the geomkfac repository)")
        return path
    path = Path(__file__).resolve().parent.parent / "proofs"
    if not path.is_dir():
        raise ConfigurationError(
            "cannot find the proof scripts: there is no proofs/ folder beside the installed "
            f"package ({str(path.parent)!r}); pass --dir PROOFS_DIR, or install geomkfac from a "
            "source checkout with `pip install -e .`")
    return path


def _order_key(proof_id: str) -> tuple[int, str]:
    try:
        return (STATEMENT_ORDER.index(proof_id), proof_id)
    except ValueError:
        return (len(STATEMENT_ORDER), proof_id)


def discover(directory: str | Path | None = None) -> list[Path]:
    """The proof scripts in ``directory``: ``*.py`` not starting with ``_``, sorted by name.

    Examples
    --------
    >>> all(p.suffix == ".py" and not p.name.startswith("_") for p in discover())
    True
    """
    path = find_proofs_dir(directory)
    return sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))


def load_proof(path: str | Path):
    """Import a proof script from its path and check that it defines the protocol.

    The script's folder is put on ``sys.path`` so that scripts can share private
    modules (``proofs/_*.py``), exactly as when the script is run directly.

    Raises
    ------
    ConfigurationError
        If the script lacks ``ID``, ``STATEMENT``, ``METHOD`` or ``check``.
    """
    path = Path(path).resolve()
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file is not None and Path(main_file).resolve() == path:
        module = main
    else:
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = "geomkfac_proof_" + re.sub(r"\W", "_", path.stem) + f"_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"cannot import proof script {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    missing = [a for a in ("ID", "STATEMENT", "METHOD", "check") if not hasattr(module, a)]
    if missing:
        raise ConfigurationError(
            f"proof script {path.name} must define ID, STATEMENT, METHOD and check(fast); "
            f"missing: {', '.join(missing)}")
    if module.METHOD not in _METHODS:
        raise ConfigurationError(
            f"proof script {path.name}: METHOD must be one of {_METHODS}, got {module.METHOD!r}")
    return module


def _normalize_id(text: str) -> str:
    t = text.lower().replace(" ", "")
    t = t.replace("§", "s")
    for prefix in ("theorem", "thm", "lemma", "proposition", "prop", "example", "ex.",
                   "section", "sec."):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    if t.startswith("sec"):
        t = "s" + t[3:]
    return t


def _matches(proof_id: str, stem: str, selector: str) -> bool:
    sel = _normalize_id(selector)
    if not sel:
        return False
    candidates = [_normalize_id(proof_id)] + [_normalize_id(p) for p in proof_id.split("/")]
    if any(c == sel or c.startswith(sel) for c in candidates):
        return True
    return stem.lower() == selector.lower()


def select(paths: Sequence[Path], ids: Iterable[str]) -> list[Path]:
    """Keep the scripts whose ``ID`` (or file stem) matches one of ``ids``.

    An id given exactly (case and spaces aside) selects that script alone.  Otherwise
    matching ignores case, spaces and the words Thm/Lemma/Prop/Ex.; an id matches
    by prefix (``"B"`` selects ``B.1`` and ``B.2``; ``"3.2"`` selects ``Thm 3.2``;
    ``"§2.1"`` or ``"sec2.1"`` selects ``§2.1``, while ``"2.1"`` selects ``Thm 2.1``).

    Raises
    ------
    ConfigurationError
        If an id matches no script.
    """
    ids = list(ids)
    if not ids:
        return list(paths)
    chosen: list[Path] = []
    for selector in ids:
        # an exact id wins over prefixes and parts ("Thm G.3" is not "Eqn. 4.7/G.3")
        exact = [p for p in paths if _peek_id(p).lower().replace(" ", "") == selector.lower().replace(" ", "")]
        hits = exact or [p for p in paths if _matches(_peek_id(p), p.stem, selector)]
        if not hits:
            known = ", ".join(_peek_id(p) for p in paths)
            raise ConfigurationError(f"no proof with id {selector!r}; known ids: {known}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _peek_id(path: Path) -> str:
    """Read ``ID = "..."`` from the script's text without importing it."""
    match = re.search(r'^ID\s*=\s*["\'](.+?)["\']', path.read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else path.stem


# ----------------------------------------------------------------------------- running


def run_proof(path: str | Path, fast: bool = False) -> ProofResult:
    """Run one proof script; a script that raises becomes an ``ERROR`` row, not a crash.

    Parameters
    ----------
    path : path
        The script.
    fast : bool
        Pass ``fast=True`` to ``check`` (fewer seeds / steps, same tolerances).
    """
    path = Path(path)
    proof_id, statement, method = _peek_id(path), path.stem, "?"
    start = time.perf_counter()
    try:
        module = load_proof(path)
        proof_id, statement, method = module.ID, module.STATEMENT, module.METHOD
        # a proof decides symbolic identities exactly: never by the randomized zero test
        # that interactive equality uses by default (geomkfac.fields.zero_test)
        from geomkfac.fields import zero_test

        with zero_test("proof"):
            out = module.check(fast=fast)
        seconds = time.perf_counter() - start
        missing = [k for k in _REQUIRED_KEYS if k not in out]
        if missing:
            raise ConfigurationError(
                f"check() of {path.name} must return {', '.join(_REQUIRED_KEYS)}; "
                f"missing: {', '.join(missing)}")
        return ProofResult(
            id=proof_id, statement=statement, method=method,
            holds=bool(out["holds"]), discrepancy=float(out["discrepancy"]),
            negative_control=str(out["negative_control"]),
            negative_discrepancy=float(out["negative_discrepancy"]),
            negative_fails=bool(out["negative_fails"]), seconds=seconds,
            details=dict(out.get("details", {})))
    except Exception:  # noqa: BLE001 - a failing proof is a table row, not a crash
        seconds = time.perf_counter() - start
        return ProofResult(
            id=proof_id, statement=statement, method=method, holds=False,
            discrepancy=math.nan, negative_control="", negative_discrepancy=math.nan,
            negative_fails=False, seconds=seconds,
            details={"error": traceback.format_exc()})


_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _run_one(args) -> ProofResult:
    path, fast = args
    return run_proof(path, fast=fast)


def run_proofs(paths: Sequence[Path], fast: bool = False, progress=None, jobs: int = 1) -> list[ProofResult]:
    """Run several scripts and return their results in the order of ``STATEMENT_ORDER``.

    ``progress(result)`` is called after each proof, if given.  With ``jobs > 1`` the scripts
    run in that many worker processes (each proof is independent and seeds its own random
    numbers, so the results do not depend on ``jobs``).
    """
    paths = list(paths)
    results = []
    if jobs > 1 and len(paths) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        # fresh interpreters ("spawn": no BLAS thread pool inherited across fork), each with
        # one BLAS thread: the proofs' matrices are small, and the workers share the CPUs
        saved = {k: os.environ.get(k) for k in _BLAS_THREAD_VARS}
        os.environ.update({k: "1" for k in _BLAS_THREAD_VARS})
        try:
            with cf.ProcessPoolExecutor(max_workers=min(jobs, len(paths)),
                                        mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_run_one, (p, fast)) for p in paths]
                for fut in cf.as_completed(futures):
                    result = fut.result()
                    if progress is not None:
                        progress(result)
                    results.append(result)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    else:
        for path in paths:
            result = run_proof(path, fast=fast)
            if progress is not None:
                progress(result)
            results.append(result)
    return sorted(results, key=lambda r: _order_key(r.id))


# ----------------------------------------------------------------------------- display


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    return f"{x:.1e}"


_HEADER = ("id", "statement", "method", "result", "discrepancy", "negative control",
           "neg. discrepancy", "seconds")


def _rows(results: Sequence[ProofResult], width: int | None) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        statement = r.statement
        if width is not None and len(statement) > width:
            statement = statement[: width - 1] + "…"
        rows.append((r.id, statement, r.method, r.status, _fmt(r.discrepancy),
                     r.negative_status, _fmt(r.negative_discrepancy), f"{r.seconds:.2f}"))
    return rows


def format_table(results: Sequence[ProofResult], statement_width: int = 56) -> str:
    """A plain-text table of results, one row per statement, plus a summary line.

    Examples
    --------
    >>> r = ProofResult("X.1", "one equals one", "symbolic", True, 0.0,
    ...                 "one equals two", 1.0, True, 0.01, {})
    >>> print(format_table([r]).splitlines()[2])
    X.1  one equals one  symbolic  holds   0            fails             1.0e+00           0.01
    """
    rows = [_HEADER] + _rows(results, statement_width)
    widths = [max(len(row[j]) for row in rows) for j in range(len(_HEADER))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(_summary(results))
    return "\n".join(lines)


def format_markdown(results: Sequence[ProofResult]) -> str:
    """The same table as Markdown (full statements), plus the summary line.

    Examples
    --------
    >>> r = ProofResult("X.1", "one equals one", "symbolic", True, 0.0,
    ...                 "one equals two", 1.0, True, 0.01, {})
    >>> print(format_markdown([r]).splitlines()[2])
    | X.1 | one equals one | symbolic | holds | 0 | fails | 1.0e+00 | 0.01 |
    """
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(_HEADER) + " |",
             "|" + "|".join("---" for _ in _HEADER) + "|"]
    for row in _rows(results, None):
        lines.append("| " + " | ".join(esc(c) for c in row) + " |")
    lines.append("")
    lines.append(_summary(results))
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "\\": r"\textbackslash{}"}
_TEX_UNICODE = {"→": r"$\to$", "←": r"$\leftarrow$", "↔": r"$\leftrightarrow$", "≤": r"$\le$",
                "≥": r"$\ge$", "≈": r"$\approx$", "≠": r"$\ne$", "×": r"$\times$", "⊗": r"$\otimes$",
                "∘": r"$\circ$", "·": r"$\cdot$", "♯": r"$\sharp$", "♭": r"$\flat$", "∈": r"$\in$",
                "ᵀ": r"$^{\top}$", "⁻": r"$^{-}$", "¹": r"$^{1}$", "²": r"$^{2}$", "ᴷ": r"$^{K}$",
                "‡": r"$^{\ddagger}$", "†": r"$^{\dagger}$", "′": r"$'$", "∞": r"$\infty$",
                "—": "---", "–": "--", "…": r"\ldots{}", "§": r"\S{}", "|": r"$|$",
                "ā": r"$\bar{a}$", "̄": "", "∇": r"$\nabla$", "∂": r"$\partial$", "√": r"$\surd$",
                "±": r"$\pm$", "ε": r"$\varepsilon$"}


def latex_escape(text: str) -> str:
    r"""Plain text as LaTeX text: special characters escaped, Greek letters and common
    math symbols as math commands, any other non-ASCII character as ``?``.

    >>> latex_escape("G_κ = B⁻ᵀ G B⁻¹ (50%)")
    'G\\_$\\kappa$ = B$^{-}$$^{\\top}$ G B$^{-}$$^{1}$ (50\\%)'
    """
    from geomkfac.display import GREEK

    out = []
    for ch in str(text):
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in GREEK:
            out.append("$" + GREEK[ch] + "$")
        elif ch in _TEX_UNICODE:
            out.append(_TEX_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def _latex_details(details: dict[str, Any]) -> list[str]:
    lines = [r"\begin{itemize}"]
    for key, value in details.items():
        if key == "error":
            continue
        if isinstance(value, dict):
            lines.append(r"\item " + latex_escape(key) + ":")
            lines += _latex_details(value) if value else []
        elif isinstance(value, str) and "\n" in value:
            body = r" \\ ".join(latex_escape(ln) if ln.strip() else r"~" for ln in value.splitlines())
            lines.append(r"\item " + latex_escape(key) + r": {\small\ttfamily " + body + "}")
        else:
            if isinstance(value, float):
                value = f"{value:.3e}"
            lines.append(r"\item " + latex_escape(key) + ": " + latex_escape(value))
    if len(lines) == 1:
        lines.append(r"\item (no details)")
    lines.append(r"\end{itemize}")
    return lines


def format_latex(results: Sequence[ProofResult], coverage_line: str | None = None) -> str:
    r"""A standalone LaTeX document: the table of results (full statements), the summary,
    the coverage line, and one subsection per statement with what its proof computed.

    Examples
    --------
    >>> r = ProofResult("X.1", "κ is one", "symbolic", True, 0.0,
    ...                 "one equals two", 1.0, True, 0.01, {"matrix": "[1 0]\n[0 1]"})
    >>> tex = format_latex([r])
    >>> tex.startswith(r"\documentclass{article}"), r"X.1 & $\kappa$ is one & symbolic & holds" in tex
    (True, True)
    """
    head = [r"\documentclass{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{longtable}",
            r"\begin{document}", r"\section*{Statements of the paper, each with a negative control}",
            r"\begin{longtable}{lp{5.5cm}llrlrr}",
            " & ".join(latex_escape(h) for h in _HEADER) + r" \\ \hline"]
    body = [" & ".join(latex_escape(c) for c in row) + r" \\" for row in _rows(results, None)]
    tail = [r"\end{longtable}", "", latex_escape(_summary(results)) + r"\par"]
    if coverage_line:
        tail.append(latex_escape(coverage_line) + r"\par")
    for r in results:
        tail.append(r"\subsection*{" + latex_escape(r.id) + ": " + latex_escape(r.statement) + "}")
        tail.append(latex_escape(f"method: {r.method}; statement {r.status}, discrepancy {_fmt(r.discrepancy)}; "
                                 f"negative control ({r.negative_control}) {r.negative_status}, discrepancy "
                                 f"{_fmt(r.negative_discrepancy)}; {r.seconds:.2f} s") + r"\par")
        if r.error is not None:
            tail.append(r"The proof raised: {\small\ttfamily " + r" \\ ".join(latex_escape(ln) for ln in r.error.splitlines()[-3:]) + "}")
        else:
            tail += _latex_details(r.details)
    tail.append(r"\end{document}")
    return "\n".join(head + body + tail) + "\n"


def _summary(results: Sequence[ProofResult]) -> str:
    n_ok = sum(r.passed for r in results)
    total = sum(r.seconds for r in results)
    return (f"{n_ok}/{len(results)} statements hold with their negative controls failing "
            f"({total:.1f} s of proof time)")


def coverage(ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(covered, missing)``: which of :data:`PAPER_STATEMENTS` have a proof among ``ids``.

    >>> coverage(["B.1", "Thm 3.2", "extra row"])[0]
    ['B.1', 'Thm 3.2']
    >>> len(coverage([])[1]) == len(PAPER_STATEMENTS)
    True
    """
    have = {_normalize_id(i) for i in ids}
    covered = [s for s in PAPER_STATEMENTS if _normalize_id(s) in have]
    missing = [s for s in PAPER_STATEMENTS if _normalize_id(s) not in have]
    return covered, missing


def format_coverage(ids: Iterable[str]) -> str:
    """One line: how many of the paper's statements have a proof, and the missing ones by name.

    >>> print(format_coverage(PAPER_STATEMENTS))
    coverage: 18/18 of the paper's statements have a proof
    >>> format_coverage(["B.1"]).startswith("coverage: 1/18 of the paper's statements have a proof; missing: B.2, ")
    True
    """
    covered, missing = coverage(ids)
    line = f"coverage: {len(covered)}/{len(PAPER_STATEMENTS)} of the paper's statements have a proof"
    return line + (f"; missing: {', '.join(missing)}" if missing else "")


def _print_details(details: dict[str, Any], indent: str = "  ", file=None) -> None:
    file = file or sys.stdout
    for key, value in details.items():
        if key == "error":
            continue
        if isinstance(value, dict):
            print(f"{indent}{key}:", file=file)
            _print_details(value, indent + "  ", file=file)
        elif isinstance(value, str) and "\n" in value:
            print(f"{indent}{key}:", file=file)
            for line in value.splitlines():
                print(f"{indent}  {line}", file=file)
        else:
            if isinstance(value, float):
                value = f"{value:.3e}"
            print(f"{indent}{key}: {value}", file=file)


def run_script(path: str | Path, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python proofs/<name>.py [--fast]``: run, print, return the exit code.

    Prints the statement, what was computed (``details``), the measured discrepancy of
    the statement and of its negative control, and returns 0 only if the statement holds
    and the negative control fails.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    fast = "--fast" in argv
    result = run_proof(path, fast=fast)
    print(f"{result.id}: {result.statement}")
    print(f"method: {result.method}{' (fast mode)' if fast else ''}")
    if result.error is not None:
        print(result.error, file=sys.stderr)
        print("result: ERROR (the proof raised)")
        return 1
    print("computed:")
    _print_details(result.details)
    print(f"statement: {result.status}   discrepancy {_fmt(result.discrepancy)}")
    print(f"negative control: {result.negative_control}")
    print(f"negative control: {result.negative_status}   discrepancy "
          f"{_fmt(result.negative_discrepancy)}")
    print(f"time: {result.seconds:.2f} s")
    return 0 if result.passed else 1


# ----------------------------------------------------------------------------- CLI


def _check_report_path(report: str) -> None:
    """Refuse an unwritable ``--report`` before running any proof (ConfigurationError)."""
    target = Path(report)
    parent = target.parent if str(target.parent) else Path(".")
    problem = None
    if target.is_dir():
        problem = "it is a directory"
    elif not parent.is_dir():
        problem = f"the folder {parent} does not exist"
    elif target.exists() and not os.access(target, os.W_OK):
        problem = "the file is not writable"
    elif not target.exists() and not os.access(parent, os.W_OK | os.X_OK):
        problem = f"the folder {parent} is not writable"
    if problem:
        raise ConfigurationError(f"--report {report}: cannot write the report ({problem}); "
                                 "give a writable file path")


def _command(args: argparse.Namespace) -> int:
    if args.report:
        _check_report_path(args.report)
    paths = select(discover(args.dir), args.ids)

    def progress(r: ProofResult) -> None:
        print(f"  {r.id:<10} {r.status:<6} ({r.seconds:.2f} s)", file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = run_proofs(paths, fast=args.fast, progress=None if args.quiet else progress, jobs=args.jobs)
    wall = time.perf_counter() - start
    print(format_table(results))
    print(f"wall-clock time: {wall:.1f} s ({args.jobs} worker process{'es' if args.jobs > 1 else ''})")
    cov = None if args.ids else format_coverage(_peek_id(p) for p in discover(args.dir))
    if cov:
        print(cov)
    for r in results:
        if r.error is not None:
            print(f"\n{r.id} raised:\n{r.error}", file=sys.stderr)
    if args.report:
        try:
            Path(args.report).write_text(format_markdown(results) + (f"\n{cov}\n" if cov else ""),
                                         encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"--report {args.report}: cannot write the report ({exc.strerror or exc}); "
                "give a writable file path"
            ) from None
        print(f"report written to {args.report}")
    if args.latex:
        Path(args.latex).write_text(format_latex(results, cov), encoding="utf-8")
        print(f"LaTeX written to {args.latex}")
    return 0 if all(r.passed for r in results) else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``geomkfac prove [IDS…] [--fast] [--report FILE.md] [--latex FILE.tex] [--dir PROOFS_DIR]``."""
    parser = subparsers.add_parser(
        "prove",
        help="check the paper's statements, each with a negative control",
        description="Run the proof scripts (one per statement of the paper) and print a "
                    "table; exit non-zero if a statement fails or a negative control "
                    "does not fail.")
    parser.add_argument("ids", nargs="*", metavar="ID",
                        help="statement ids to run (e.g. B.1 3.2 '§2.1'); default: all")
    parser.add_argument("--fast", action="store_true",
                        help="fewer seeds and steps (same tolerances)")
    parser.add_argument("--report", metavar="FILE.md", help="also write the table as Markdown")
    parser.add_argument("--latex", metavar="FILE.tex",
                        help="also write the table and each statement's details as a LaTeX document")
    parser.add_argument("--dir", metavar="PROOFS_DIR", default=None,
                        help="folder of proof scripts (default: proofs/ of the source checkout)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--jobs", type=positive_int, default=min(4, os.cpu_count() or 1), metavar="N",
                        help="run the proofs in N worker processes (default: the number of CPUs, at "
                             "most 4; 1 runs them one after the other)")
    parser.set_defaults(func=_command)
    return parser
