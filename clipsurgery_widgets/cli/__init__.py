"""The ``clipsurgery`` command line: batch explanations, method comparisons and segmentations as figures.

    clipsurgery explain IMAGE --labels "cat,dog" [--method sclip] [--compare sclip,clearclip,naclip]
    clipsurgery segment IMAGE --classes voc21|names.txt [--method naclip] [--pamr 10] --out seg.png

Exit codes: 0 success, 1 runtime error (model, image, file), 2 usage error. One module per
subcommand; `common` holds what they share (model options, sizes, errors).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from .common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, UsageError, parse_size
from .evaluate import add_evaluate_parser, run_evaluate
from .explain import add_explain_parser, run_explain
from .segment import add_segment_parser, run_segment

__all__ = ["main", "build_parser", "parse_size", "UsageError"]

COMMANDS = {"explain": run_explain, "segment": run_segment, "evaluate": run_evaluate}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="clipsurgery",
        description="See what a CLIP model looks at: CLIP Surgery and other dense methods from the command line.")
    parser.add_argument("--version", action="version", version=f"clipsurgery-widgets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_explain_parser(sub)
    add_segment_parser(sub)
    add_evaluate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 on usage errors
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"clipsurgery: error: {exc}\n")
    except KeyboardInterrupt:
        print("clipsurgery: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one readable line; the traceback only on request
        if getattr(args, "verbose", False):
            traceback.print_exc()
        else:
            print(f"clipsurgery: error: {exc} (add --verbose for details)", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
