"""The ``geomkfac audit`` subcommand (:func:`add_parser`): the invariance audit of
:mod:`geomkfac.audit` from the command line.

It prints the table (optimizer × reparameterization: distance after the first step, final
and largest distance, verdict, the theory's expectation) and exits 0 when every expectation
holds, 1 (with the failing pairs on stderr) when one does not.  ``--out DIR`` writes
``table.txt``, ``audit.json`` and ``distances.png`` there (refusing a non-empty folder
without ``--force``); ``--json FILE`` writes the JSON report alone.

>>> import argparse
>>> sub = argparse.ArgumentParser().add_subparsers()
>>> p = add_parser(sub)
>>> a = p.parse_args(["--quick", "--expect", "sgd:random_affine=invariant"])
>>> a.quick, a.expect
(True, ['sgd:random_affine=invariant'])
"""

from __future__ import annotations

import argparse
import os
import sys

from geomkfac.audit import ARCHITECTURES, OPTIMIZERS, REPARAMS, run_audit
from geomkfac.cli import positive_int
from geomkfac.errors import ConfigurationError

__all__ = ["add_parser", "QUICK", "parse_expectations"]

#: the settings of ``--quick`` (a run of a few seconds)
QUICK = dict(steps=3, damping_lambdas=(0.0, 1e-6, 1e-2))

#: the files ``--out DIR`` writes
OUT_FILES = ("table.txt", "audit.json", "distances.png")

_CLAIMS = {"invariant": "invariant", "not-invariant": "not invariant",
           "not invariant": "not invariant", "none": None}


def _list(text, known, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise ConfigurationError(f"--{what}: unknown {', '.join(map(repr, bad)) or '(empty list)'}; "
                                 f"choose from: {', '.join(known)} (comma-separated)")
    return items


def parse_expectations(items) -> dict:
    """``["OPT:REPARAM=CLAIM", …]`` → ``{(OPT, REPARAM): claim}`` with CLAIM one of
    ``invariant``, ``not-invariant``, ``none``.

    >>> parse_expectations(["sgd:whitening=invariant"])
    {('sgd', 'whitening'): 'invariant'}
    """
    out = {}
    for item in items or ():
        try:
            pair, claim = item.split("=")
            opt, rp = pair.split(":")
        except ValueError:
            raise ConfigurationError(f"--expect {item!r}: write OPTIMIZER:REPARAM=CLAIM, e.g. "
                                     "sgd:random_affine=invariant") from None
        if opt not in OPTIMIZERS or rp not in REPARAMS or claim not in _CLAIMS:
            raise ConfigurationError(
                f"--expect {item!r}: optimizer in {', '.join(OPTIMIZERS)}; reparameterization in "
                f"{', '.join(REPARAMS)}; claim in invariant, not-invariant, none")
        out[(opt, rp)] = _CLAIMS[claim]
    return out


def _lambdas(text):
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigurationError(f"--lambdas {text!r}: give comma-separated numbers >= 0, "
                                 "e.g. 0,1e-6,1e-2 (an empty string: no damping curve)") from None
    return vals


def _check_out(path, force):
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigurationError(f"--out {path}: exists and is not a folder; choose another path")
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise ConfigurationError(f"--out {path}: the folder is not empty; pass --force to write "
                                 "into it anyway, or choose an empty or new folder")


def _command(args) -> int:
    if args.threads is not None:
        from geomkfac.threads import limit_blas_threads

        limit_blas_threads(args.threads)
    kw = dict(QUICK) if args.quick else {}
    if args.steps is not None:
        kw["steps"] = args.steps
    if args.examples is not None:
        kw["n_examples"] = args.examples
    if args.lambdas is not None:
        kw["damping_lambdas"] = _lambdas(args.lambdas)
    if args.out:
        _check_out(args.out, args.force)
    result = run_audit(
        args.arch,
        _list(args.reparams, REPARAMS, "reparams") if args.reparams else None,
        _list(args.optimizers, tuple(OPTIMIZERS), "optimizers") if args.optimizers else None,
        hidden=tuple(int(h) for h in args.hidden.split(",")), activation=args.activation,
        seed=args.seed, expectations=parse_expectations(args.expect), **kw)
    table = result.table()
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "table.txt"), "w", encoding="utf-8") as fh:
            fh.write(table + "\n")
        with open(os.path.join(args.out, "audit.json"), "w", encoding="utf-8") as fh:
            fh.write(result.to_json() + "\n")
        result.plot(os.path.join(args.out, "distances.png"))
        print(f"wrote {', '.join(os.path.join(args.out, f) for f in OUT_FILES)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(result.to_json() + "\n")
    if not result.ok:
        failed = "; ".join(f"{r.optimizer} x {r.reparam}: expected {r.expected}, got {r.verdict}"
                           for r in result.failures)
        print(f"geomkfac audit: {len(result.failures)} expectation(s) failed: {failed}",
              file=sys.stderr)
        return 1
    return 0


def _hidden(text):
    try:
        vals = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of widths") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: widths must be >= 1")
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``geomkfac audit [--quick] [--reparams …] [--optimizers …] [--out DIR [--force]]
    [--json FILE] [--expect OPT:REPARAM=CLAIM …]``."""
    parser = subparsers.add_parser(
        "audit",
        help="train every optimizer in two frames and check which are invariant",
        description="The invariance audit: one abstract network on the digits, written in "
                    "two frames (a reparameterization), trained by each optimizer in both; "
                    "after every step the relative output distance max|f1 - f2| / max|f1| is "
                    "recorded. Prints a table and exits 1 when an expectation of the theory "
                    "fails (0 when all hold).")
    parser.add_argument("--arch", default="mlp", choices=list(ARCHITECTURES),
                        help="mlp (16-W-10 on 2x2-pooled digits, default), cnn (two valid 3x3 "
                             "convolutions, 3 and 2 channels, dense) or rnn (6 hidden units over "
                             "the 8 rows of a digit, last step, dense)")
    parser.add_argument("--reparams", metavar="LIST",
                        help=f"comma-separated, from: {', '.join(REPARAMS)} (default: all)")
    parser.add_argument("--optimizers", metavar="LIST",
                        help=f"comma-separated, from: {', '.join(OPTIMIZERS)} (default: all)")
    parser.add_argument("--steps", type=positive_int, metavar="N", help="steps per run (default 20)")
    parser.add_argument("--examples", type=positive_int, metavar="N",
                        help="digits examples used (default 512; 256 for the cnn)")
    parser.add_argument("--hidden", type=_hidden, default="8", metavar="W[,W…]",
                        help="hidden widths of the MLP (default 8)")
    parser.add_argument("--activation", choices=["tanh", "sigmoid"], default="tanh",
                        help="hidden activation (default tanh)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data subset, weights, changes")
    parser.add_argument("--lambdas", metavar="LIST",
                        help="damping values for the K-FAC damping curve (default "
                             "0,1e-8,1e-6,1e-4,1e-2,1; '' for none)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a run of seconds: {QUICK['steps']} steps and "
                             f"{len(QUICK['damping_lambdas'])} damping values (explicit "
                             "options override)")
    parser.add_argument("--expect", action="append", metavar="OPT:REPARAM=CLAIM",
                        help="override an expectation (CLAIM: invariant, not-invariant, none); "
                             "repeatable")
    parser.add_argument("--out", metavar="DIR",
                        help="write table.txt, audit.json and distances.png into DIR")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out DIR (its table.txt, audit.json and "
                             "distances.png are replaced, other files left as they are)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="use at most N BLAS/OpenMP threads (default: the libraries' own)")
    parser.add_argument("--json", metavar="FILE", help="write the JSON report to FILE")
    parser.set_defaults(func=_command)
    return parser
