"""The ``geomkfac`` command: ``geomkfac prove``, ``geomkfac train`` and ``geomkfac audit``.

Each subcommand lives in its own module and registers itself through an
``add_parser(subparsers)`` function, so this file only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from geomkfac.errors import GeomKFACError

#: subcommand name -> module providing ``add_parser(subparsers)``; the parser it adds
#: sets ``func`` (a callable taking the parsed namespace and returning an exit code).
SUBCOMMANDS = {
    "prove": "geomkfac.prove",
    "train": "geomkfac.nn.cli",
    "audit": "geomkfac.audit_cli",
}


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit code 2), pointing to --help;
    the subcommands' parsers inherit it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts (``--jobs``, ``--steps``, …): a whole number ≥ 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="geomkfac",
        description="The differential geometry of natural gradient and K-FAC, executable.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    return parser


#: set this environment variable to see the traceback of an unexpected error
DEBUG_ENV = "GEOMKFAC_DEBUG"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the ``geomkfac`` command; returns the exit code.

    Every failure is one line on stderr and exit code 2: a :class:`GeomKFACError` (bad
    input, with what to do), an operating-system error (e.g. a file that cannot be
    written), or an unexpected error (reported as internal; set ``GEOMKFAC_DEBUG=1`` for
    its traceback). A command's own status (e.g. 1: a proof failed, a run stopped on
    NaN) is returned as is.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    where = f"geomkfac {args.command}"
    try:
        return int(args.func(args) or 0)
    except GeomKFACError as exc:
        print(f"{where}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{where}: error:{name} {_one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{where}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(please report it; set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
