"""What the subcommands share: model options, output and size checks, progress lines, the usage error."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
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
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto (bf16 on a CUDA GPU, fp32 on the CPU), fp32, bf16 (about 2x faster on CPUs with "
                             "bf16 units, maps within 1%% of fp32) or fp16 (CUDA only) (default auto)")


def add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--opacity", type=float, default=0.6, help="overlay opacity over the image, 0..1 (default 0.6)")
    parser.add_argument("--dpi", type=int, default=150, help="figure resolution (default 150)")
    parser.add_argument("--out", default=default_out, help=f"output figure: .png, .svg, .pdf or .jpg (default {default_out})")
    parser.add_argument("--layout", default=None, type=parse_layout,
                        help="print size: column (3.5 in wide), page (7 in), a width in inches (5) or WxH "
                             "in inches (5x3); fonts are set for that size (default: the figure's own size)")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def parse_layout(text: str) -> str | float | tuple[float, float]:
    """ "column" / "page" -> itself; "5" -> 5.0 inches wide; "5x3" -> (5.0, 3.0) inches; checked as figures do."""
    from ..figures.layout import paper_size  # (matplotlib: imported only when the option is used)

    text = text.strip().lower()
    try:
        layout = text if text in ("column", "page") else (
            tuple(float(v) for v in text.split("x")) if "x" in text else float(text))
        paper_size(layout)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}" if "layout" in str(exc).lower() else
                                         f"{text!r}: use column, page, a width in inches or WxH in inches") from None
    return layout


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


def check_model_options(args: argparse.Namespace) -> None:
    """--device (and, for ``explain``, --depth against the model's block count) checked before loading.

    The block count comes from the model's config (open_clip's, or the tiny models'), read without
    building the model; a model known only from its checkpoint is checked once loaded
    (:func:`check_depth_after_loading`).
    """
    if args.device is not None:
        import torch

        try:
            device = torch.device(args.device)
        except (RuntimeError, ValueError):
            raise UsageError(f"--device {args.device!r} is not a device: use cpu, cuda, cuda:1 or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device!r}: CUDA is not available on this machine; use --device cpu")
    check_precision_option(args)
    depth = getattr(args, "depth", None)
    if depth is None:
        return
    if depth < 1:
        raise UsageError(f"--depth must be a whole number of blocks, 1 or more, not {depth}")
    blocks = config_blocks(args.model)
    if blocks is not None and depth > blocks:
        raise UsageError(f"--depth {depth} is more than {args.model} has: choose 1 to {blocks} (its number of "
                         f"transformer blocks)")


def check_precision_option(args: argparse.Namespace) -> None:
    """--precision fp16 needs a CUDA device (checked before loading)."""
    if getattr(args, "precision", "auto") != "fp16":
        return
    import torch

    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA device (this run uses {device}); use --precision bf16 or fp32")


def config_blocks(name: str) -> int | None:
    """Transformer blocks of a named ViT model from its config (no weights read); None if unknown or a ResNet."""
    from ..engine.loading import TINY_CONFIGS

    config = TINY_CONFIGS.get(name)
    if config is None:
        import open_clip

        config = open_clip.get_model_config(name)
    layers = (config or {}).get("vision_cfg", {}).get("layers")
    return layers if isinstance(layers, int) else None


def check_depth_after_loading(args: argparse.Namespace, model: Any) -> None:
    """--depth against a loaded model whose config was not known by name (e.g. a checkpoint file)."""
    blocks = model.num_blocks
    if blocks is not None and not 1 <= args.depth <= blocks:
        raise UsageError(f"--depth {args.depth} does not fit this model: choose 1 to {blocks} (its number of "
                         f"transformer blocks)")


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


def save(fig: Any, args: argparse.Namespace, out: str | Path | None = None) -> Path:
    """Write ``fig`` to ``out`` (default ``--out``) at ``--dpi``, sized by ``--layout`` when given."""
    out = Path(out or args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if getattr(args, "layout", None) is not None:
        from ..figures.output import save_figure

        return save_figure(fig, out, dpi=args.dpi, layout=args.layout)
    fig.savefig(out, dpi=args.dpi, bbox_inches="tight")
    return out
