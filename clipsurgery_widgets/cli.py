"""The ``clipsurgery`` command line: batch explanations written as figures.

Exit codes: 0 success, 1 runtime error (model, image, file), 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Arguments that parse but make no sense together; reported like argparse's own errors."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="clipsurgery",
        description="See what a CLIP model looks at: CLIP Surgery heatmaps from the command line.")
    parser.add_argument("--version", action="version", version=f"clipsurgery-widgets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ex = sub.add_parser(
        "explain", help="write a figure of label heatmaps for one image",
        description="Explain IMAGE with each label and write a figure: one row per label, columns "
                    "image / raw CLIP / CLIP Surgery. IMAGE is a file, or sample:cat, sample:astronaut, "
                    "sample:coffee, sample:rocket.")
    ex.add_argument("image", metavar="IMAGE")
    ex.add_argument("--labels", required=True, help='comma-separated labels, e.g. "bench,person"; "a+b" combines')
    ex.add_argument("--model", default="ViT-B-16",
                    help="open_clip model name, or tiny-random-vit / tiny-random-resnet (random weights, "
                         "for smoke tests) (default: ViT-B-16)")
    ex.add_argument("--pretrained", default="openai", help="open_clip pretrained tag (default: openai)")
    ex.add_argument("--checkpoint", metavar="FILE", help="local weights file for --model instead of downloading")
    ex.add_argument("--trust-checkpoint", action="store_true",
                    help="allow pickled checkpoints beyond plain tensors (can run code: trusted files only)")
    ex.add_argument("--size", default="224", help="model input size S or HxW, multiples of the patch size (default 224)")
    ex.add_argument("--depth", type=int, default=6, help="surgery depth: final blocks with the v-v path (default 6)")
    ex.add_argument("--method", choices=("surgery", "raw", "both"), default="both", help="which maps to draw (default both)")
    ex.add_argument("--redundancy", choices=("auto", "labels", "empty", "none"), default="auto",
                    help="feature-surgery mode (default auto)")
    ex.add_argument("--cmap", default="jet", help="matplotlib colour map (default jet)")
    ex.add_argument("--opacity", type=float, default=0.6, help="heatmap opacity over the image, 0..1 (default 0.6)")
    ex.add_argument("--dpi", type=int, default=150, help="figure resolution (default 150)")
    ex.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    ex.add_argument("--out", default="clipsurgery.png", help="output figure: .png, .svg or .pdf (default clipsurgery.png)")
    ex.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    ex.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


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


def _check_explain_args(args: argparse.Namespace) -> tuple[list[str], int | tuple[int, int]]:
    from .engine.text.labels import parse_labels

    labels = parse_labels(args.labels, allow_empty=True)
    if not labels:
        raise UsageError('--labels is empty: give at least one label, e.g. --labels "cat,dog"')
    if not 0.0 <= args.opacity <= 1.0:
        raise UsageError(f"--opacity must lie in [0, 1], not {args.opacity}")
    if args.dpi < 10 or args.dpi > 1200:
        raise UsageError(f"--dpi must be between 10 and 1200, not {args.dpi}")
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        raise UsageError(f"--out must end in .png, .svg, .pdf or .jpg, not {args.out!r}")
    if not args.image.startswith("sample:") and not Path(args.image).exists():
        raise FileNotFoundError(f"Image file not found: {args.image}")
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise UsageError(f"--cmap {args.cmap!r} is not a matplotlib colour map (try jet, viridis, inferno)")
    return labels, parse_size(args.size)


def run_explain(args: argparse.Namespace) -> int:
    labels, size = _check_explain_args(args)
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    import matplotlib

    matplotlib.use("Agg")
    from .engine import Explainer, load_image, load_model
    from .engine.images import check_input_size
    from .figures import explanation_grid

    t0 = time.perf_counter()
    detail = args.checkpoint or (None if args.model.startswith("tiny-random-") else args.pretrained)
    say(f"[1/3] loading model {args.model}" + (f" ({detail})" if detail else ""))
    pretrained = None if (args.pretrained or "").lower() in ("", "none") else args.pretrained
    model = load_model(args.model, pretrained=pretrained, device=args.device, checkpoint=args.checkpoint,
                       trust_checkpoint=args.trust_checkpoint)
    try:
        check_input_size(size, model.patch_size)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    rgb = load_image(args.image)
    say(f"[2/3] explaining {args.image} ({rgb.shape[1]}x{rgb.shape[0]}) with {len(labels)} label(s) at {size}")
    explanation = Explainer(model).explain(rgb, labels, method=args.method, redundancy=args.redundancy,
                                           size=size, depth=args.depth)
    methods = ("raw", "surgery") if args.method == "both" else (args.method,)
    fig = explanation_grid(rgb, explanation, methods=methods, cmap=args.cmap, opacity=args.opacity)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi, bbox_inches="tight")
    say(f"[3/3] wrote {out} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 on usage errors
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return run_explain(args)
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
