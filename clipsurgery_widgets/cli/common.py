"""What the subcommands share: model options, output and size checks, progress lines, the usage error."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
METHOD_CHOICES = ("surgery", "both", "raw", "clip_surgery", "maskclip", "sclip", "clearclip", "naclip", "gem")


class UsageError(Exception):
    """Arguments that parse but make no sense together; reported like argparse's own errors."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="ViT-B-16",
                        help="open_clip model name, or tiny-random-vit / tiny-random-resnet (random weights, "
                             "for smoke tests) (default: ViT-B-16)")
    parser.add_argument("--pretrained", default="openai", help="open_clip pretrained tag (default: openai)")
    parser.add_argument("--checkpoint", metavar="FILE", help="local weights file for --model instead of downloading")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow pickled checkpoints beyond plain tensors (can run code: trusted files only)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--opacity", type=float, default=0.6, help="overlay opacity over the image, 0..1 (default 0.6)")
    parser.add_argument("--dpi", type=int, default=150, help="figure resolution (default 150)")
    parser.add_argument("--out", default=default_out, help=f"output figure: .png, .svg, .pdf or .jpg (default {default_out})")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def parse_size(text: str) -> int | tuple[int, int]:
    """ "512" -> 512; "448x672" -> (448, 672) (height x width)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--size must be S or HxW in pixels (e.g. 512 or 448x672), not {text!r}") from None
    if len(values) == 1 and values[0] > 0:
        return values[0]
    if len(values) == 2 and min(values) > 0:
        return (values[0], values[1])
    raise UsageError(f"--size must be S or HxW with positive numbers, not {text!r}")


def check_output(args: argparse.Namespace) -> None:
    """Output options and the image path, checked before any model is loaded."""
    if not 0.0 <= args.opacity <= 1.0:
        raise UsageError(f"--opacity must lie in [0, 1], not {args.opacity}")
    if args.dpi < 10 or args.dpi > 1200:
        raise UsageError(f"--dpi must be between 10 and 1200, not {args.dpi}")
    if Path(args.out).suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--out must end in .png, .svg, .pdf or .jpg, not {args.out!r}")
    if not args.image.startswith("sample:") and not Path(args.image).exists():
        raise FileNotFoundError(f"Image file not found: {args.image}")


def reporter(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines on stderr (nothing with --quiet)."""
    return (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def load_cli_model(args: argparse.Namespace, say: Callable[[str], None], step: str) -> Any:
    from ..engine import load_model

    detail = args.checkpoint or (None if args.model.startswith("tiny-random-") else args.pretrained)
    say(f"{step} loading model {args.model}" + (f" ({detail})" if detail else ""))
    pretrained = None if (args.pretrained or "").lower() in ("", "none") else args.pretrained
    return load_model(args.model, pretrained=pretrained, device=args.device, checkpoint=args.checkpoint,
                      trust_checkpoint=args.trust_checkpoint)


def save(fig: Any, args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi, bbox_inches="tight")
    return out
