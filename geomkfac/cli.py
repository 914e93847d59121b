"""The ``geomkfac`` command: ``geomkfac prove`` and ``geomkfac train``.

Each subcommand lives in its own module and registers itself through an
``add_parser(subparsers)`` function, so this file only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from geomkfac.errors import GeomKFACError

#: subcommand name -> module providing ``add_parser(subparsers)``; the parser it adds
#: sets ``func`` (a callable taking the parsed namespace and returning an exit code).
SUBCOMMANDS = {
    "prove": "geomkfac.prove",
    "train": "geomkfac.nn.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GeomKFACError as exc:
        print(f"geomkfac {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
