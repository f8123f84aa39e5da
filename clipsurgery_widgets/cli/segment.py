"""``clipsurgery segment``: open-vocabulary segmentation of one image with a dense method, as a figure."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (EXIT_OK, UsageError, add_model_options, add_output_options, check_model_options, check_output,
                     load_cli_model, reporter, save)

DENSE = ("sclip", "naclip", "clearclip", "maskclip", "gem", "clip_surgery", "raw")


def add_segment_parser(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser(
        "segment", help="label every pixel of one image with a class list",
        description="Segment IMAGE with the classes of a benchmark (voc21, voc20, context60, context59, "
                    "coco_object, coco_stuff164k, cityscapes, ade20k) or of a class file (one line per class, "
                    "synonyms separated by commas). For a benchmark, the settings of the method's published "
                    "configs are used unless given here.")
    seg.add_argument("image", metavar="IMAGE")
    seg.add_argument("--classes", required=True, help="benchmark name or class file (names.txt)")
    add_model_options(seg)
    seg.add_argument("--method", choices=DENSE, default="sclip", help="dense method (default sclip)")
    seg.add_argument("--crop", type=int, default=None, help="window size in pixels; 0 = whole image (default 224)")
    seg.add_argument("--stride", type=int, default=None, help="window step in pixels (default 112)")
    seg.add_argument("--short-side", type=int, default=None, help="resize so the short side has this many pixels")
    seg.add_argument("--logit-scale", type=float, default=None, help="softmax temperature (default 40)")
    seg.add_argument("--prob-thd", type=float, default=None, help="below this probability a pixel is class 0")
    seg.add_argument("--area-thd", type=float, default=None, help="drop classes winning at most this pixel share")
    seg.add_argument("--pamr", type=int, default=None, metavar="STEPS", help="PAMR refinement steps (0 = off)")
    seg.add_argument("--save-labels", metavar="PNG", help="also write the class index of every pixel as a PNG")
    add_output_options(seg, "segmentation.png")


def _classes(text: str) -> tuple[list[list[str]], str | None]:
    from ..engine.segmentation import BENCHMARKS, benchmark_classes, read_class_file

    if text in BENCHMARKS:
        return benchmark_classes(text), text
    if not Path(text).expanduser().is_file():
        raise UsageError(f"--classes {text!r} is neither a benchmark ({', '.join(BENCHMARKS)}) nor a file")
    return read_class_file(text), None


def _settings(args: argparse.Namespace, benchmark: str | None) -> dict:
    from ..engine.segmentation.protocols import protocol_for, protocol_settings

    settings = dict(protocol_settings(benchmark, protocol_for(args.method))) if benchmark else {}
    given = {"crop": args.crop, "stride": args.stride, "short_side": args.short_side,
             "logit_scale": args.logit_scale, "prob_thd": args.prob_thd, "area_thd": args.area_thd,
             "pamr_steps": args.pamr}
    settings.update({k: v for k, v in given.items() if v is not None})
    if settings.get("crop") == 0:
        settings["stride"] = None
    return settings


def run_segment(args: argparse.Namespace) -> int:
    check_model_options(args)
    check_output(args)
    if args.save_labels and Path(args.save_labels).suffix.lower() != ".png":
        raise UsageError(f"--save-labels must end in .png (lossless class indices), not {args.save_labels!r}")
    classes, benchmark = _classes(args.classes)
    settings = _settings(args, benchmark)
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from PIL import Image

    from ..engine import load_image
    from ..engine.segmentation import segment
    from ..engine.segmentation.protocols import class_display_names
    from ..figures.segmentation import class_map_figure

    say = reporter(args)
    t0 = time.perf_counter()
    model = load_cli_model(args, say, "[1/3]")
    rgb = load_image(args.image)
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    say(f"[2/3] segmenting {args.image} ({rgb.shape[1]}x{rgb.shape[0]}) into {len(classes)} classes with "
        f"{args.method}" + (f" ({shown})" if shown else ""))
    result = segment(model, rgb, classes, method=args.method, precision=args.precision, **settings)
    labels = result.labels.numpy()
    names = class_display_names(classes, benchmark)
    fig = class_map_figure(rgb, labels, names, opacity=args.opacity, title=f"{args.method} segmentation")
    out = save(fig, args)
    if args.save_labels:
        dtype = np.uint8 if len(classes) <= 256 else np.uint16
        Path(args.save_labels).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(dtype)).save(args.save_labels)
        say(f"      class indices written to {args.save_labels}")
    say(f"[3/3] wrote {out} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK
