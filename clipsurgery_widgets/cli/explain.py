"""``clipsurgery explain``: label heatmaps of one image as a figure, for one method or several compared."""
from __future__ import annotations

import argparse
import time

from .common import (EXIT_OK, METHOD_CHOICES, UsageError, add_model_options, add_output_options,
                     check_depth_after_loading, check_model_options, check_output, load_cli_model, parse_size,
                     reporter, save)


def add_explain_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser(
        "explain", help="write a figure of label heatmaps for one image",
        description="Explain IMAGE with each label and write a figure: one row per label, columns "
                    "image / raw CLIP / CLIP Surgery (or the methods of --compare). IMAGE is a file, or "
                    "sample:cat, sample:astronaut, sample:coffee, sample:rocket.")
    ex.add_argument("image", metavar="IMAGE",
                    help="an image file, a sample:NAME, or a folder / glob pattern of images (then use --out-dir)")
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
    ex.add_argument("--out-dir", metavar="DIR",
                    help="for a folder or glob of images: write one figure per image into DIR (NAME.png)")
    ex.add_argument("--overwrite", action="store_true",
                    help="with --out-dir: redo figures that already exist (default: skip them)")
    ex.add_argument("--batch-size", type=int, default=None,
                    help="with --out-dir: images per forward pass (default: 1 on the CPU, where batches were "
                         "not faster per image, 8 on a GPU)")


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


def _labels(text: str) -> list[str]:
    """--labels parsed and every combined target split, so a malformed one is a usage error."""
    from ..engine.errors import TextInputError
    from ..engine.text.labels import parse_labels, parse_target

    try:
        labels = parse_labels(text, allow_empty=True)
        for label in labels:
            parse_target(label)
    except TextInputError as exc:
        raise UsageError(f"--labels: {exc}") from None
    if not labels:
        raise UsageError('--labels is empty: give at least one label, e.g. --labels "cat,dog"')
    return labels


def run_explain(args: argparse.Namespace) -> int:
    from .explain_batch import is_many, run_explain_many

    if args.out_dir is not None or is_many(args.image):
        return run_explain_many(args, _labels(args.labels), _compare_methods(args.compare), parse_size(args.size))
    labels = _labels(args.labels)
    compare = _compare_methods(args.compare)
    size = parse_size(args.size)
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise UsageError(f"--cmap {args.cmap!r} is not a matplotlib colour map (try jet, viridis, inferno)")
    check_model_options(args)
    check_output(args)
    matplotlib.use("Agg")
    from ..engine import Explainer, load_image
    from ..engine.images import check_input_size
    from ..engine.limits import check_token_budget
    say = reporter(args)
    t0 = time.perf_counter()
    model = load_cli_model(args, say, "[1/3]")
    try:  # the patch size is the loaded model's (a checkpoint may differ from its name's config)
        check_token_budget(model, check_input_size(size, model.patch_size), len(labels))
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    check_depth_after_loading(args, model)
    rgb = load_image(args.image)
    shown = ", ".join(compare) if compare else args.method
    say(f"[2/3] explaining {args.image} ({rgb.shape[1]}x{rgb.shape[0]}) with {len(labels)} label(s) at {size} "
        f"({shown})")
    surgery = {"default": None, "on": True, "off": False}[args.feature_surgery]
    method = compare[0] if compare else args.method
    explainer = Explainer(model, precision=args.precision)
    explanation = explainer.explain(rgb, labels, method=method, methods=compare, redundancy=args.redundancy,
                                    size=size, depth=args.depth, feature_surgery=surgery)
    out = save(draw_figure(args, rgb, explanation, compare), args)
    say(f"[3/3] wrote {out} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def draw_figure(args: argparse.Namespace, rgb, explanation, compare: list[str] | None):
    """The matplotlib figure of one explanation, as --method / --compare ask."""
    from ..figures import explanation_grid
    from ..figures.methods import methods_grid

    if compare or args.method not in ("raw", "surgery", "both"):
        return methods_grid(rgb, explanation, methods=compare or [explanation.method], cmap=args.cmap,
                            opacity=args.opacity)
    methods = ("raw", "surgery") if args.method == "both" else (args.method,)
    return explanation_grid(rgb, explanation, methods=methods, cmap=args.cmap, opacity=args.opacity)
