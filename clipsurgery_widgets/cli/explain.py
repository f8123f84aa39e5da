"""``clipsurgery explain``: label heatmaps of one image as a figure, for one method or several compared."""
from __future__ import annotations

import argparse
import time

from .common import (
    EXIT_OK,
    METHOD_CHOICES,
    UsageError,
    add_model_options,
    add_output_options,
    check_output,
    load_cli_model,
    parse_size,
    reporter,
    save,
)


def add_explain_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser(
        "explain", help="write a figure of label heatmaps for one image",
        description="Explain IMAGE with each label and write a figure: one row per label, columns "
                    "image / raw CLIP / CLIP Surgery (or the methods of --compare). IMAGE is a file, or "
                    "sample:cat, sample:astronaut, sample:coffee, sample:rocket.")
    ex.add_argument("image", metavar="IMAGE")
    ex.add_argument("--labels", required=True, help='comma-separated labels, e.g. "bench,person"; "a+b" combines')
    add_model_options(ex)
    ex.add_argument("--size", default="224", help="model input size S or HxW, multiples of the patch size (default 224)")
    ex.add_argument("--depth", type=int, default=6, help="surgery depth: final blocks with the v-v path (default 6)")
    ex.add_argument("--method", choices=METHOD_CHOICES, default="both",
                    help="which maps to draw: raw, surgery (= clip_surgery), both, or a dense method "
                         "maskclip, sclip, clearclip, naclip, gem (default both)")
    ex.add_argument("--compare", metavar="M1,M2,...",
                    help="draw several methods side by side from one forward pass, e.g. sclip,clearclip,naclip")
    ex.add_argument("--redundancy", choices=("auto", "labels", "empty", "none"), default="auto",
                    help="feature-surgery mode where it is on (default auto)")
    ex.add_argument("--feature-surgery", choices=("default", "on", "off"), default="default",
                    help="feature surgery: as the papers use it (on for clip_surgery only), on or off for all")
    ex.add_argument("--cmap", default="jet", help="matplotlib colour map (default jet)")
    add_output_options(ex, "clipsurgery.png")


def _compare_methods(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from ..engine.explainer import canonical_method

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--compare is empty: give method names, e.g. --compare sclip,clearclip,naclip")
    try:
        return list(dict.fromkeys(canonical_method(name) for name in names))
    except ValueError as exc:
        raise UsageError(f"--compare: {exc}") from None


def run_explain(args: argparse.Namespace) -> int:
    from ..engine.text.labels import parse_labels

    labels = parse_labels(args.labels, allow_empty=True)
    if not labels:
        raise UsageError('--labels is empty: give at least one label, e.g. --labels "cat,dog"')
    check_output(args)
    compare = _compare_methods(args.compare)
    size = parse_size(args.size)
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise UsageError(f"--cmap {args.cmap!r} is not a matplotlib colour map (try jet, viridis, inferno)")
    matplotlib.use("Agg")
    from ..engine import Explainer, load_image
    from ..engine.images import check_input_size
    from ..figures import explanation_grid
    from ..figures.methods import methods_grid

    say = reporter(args)
    t0 = time.perf_counter()
    model = load_cli_model(args, say, "[1/3]")
    try:
        check_input_size(size, model.patch_size)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    rgb = load_image(args.image)
    shown = ", ".join(compare) if compare else args.method
    say(f"[2/3] explaining {args.image} ({rgb.shape[1]}x{rgb.shape[0]}) with {len(labels)} label(s) at {size} "
        f"({shown})")
    surgery = {"default": None, "on": True, "off": False}[args.feature_surgery]
    method = compare[0] if compare else args.method
    explanation = Explainer(model).explain(rgb, labels, method=method, methods=compare, redundancy=args.redundancy,
                                           size=size, depth=args.depth, feature_surgery=surgery)
    if compare or args.method not in ("raw", "surgery", "both"):
        fig = methods_grid(rgb, explanation, methods=compare or [explanation.method], cmap=args.cmap,
                           opacity=args.opacity)
    else:
        methods = ("raw", "surgery") if args.method == "both" else (args.method,)
        fig = explanation_grid(rgb, explanation, methods=methods, cmap=args.cmap, opacity=args.opacity)
    out = save(fig, args)
    say(f"[3/3] wrote {out} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK
