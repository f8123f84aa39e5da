"""``clipsurgery evaluate``: the papers' tables on a dataset folder, resumable, locally or with Ray.

    clipsurgery evaluate --task seg --dataset voc21 --root ~/data/VOCdevkit --method raw,sclip,naclip \
        [--model ViT-B-16] [--limit N] [--out results/voc21] [--engine ray --workers 2] [--crop 0] ...

Layout errors are reported in one line before the model loads (exit 1). Rerunning the same command
with the same --out resumes where it stopped; when everything is done it only rewrites the reports.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import EXIT_OK, EXIT_RUNTIME, UsageError, add_model_options, check_precision_option

TASK_CHOICES = ("seg", "explain", "multilabel", "imagenet_seg", "ablation")
DATASET_HELP = ("voc21, voc20, context60, context59, coco_stuff164k, coco_object, cityscapes, ade20k, generic "
                "(images/, masks/, classes.txt)")


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate", help="evaluate methods on a dataset folder (mIoU, mAP, ...) with resume and a report",
        description="Evaluate one or more methods on a dataset the way the papers did, writing OUT/results.json, "
                    "OUT/per_class.csv and OUT/report.md (published numbers beside the measured ones). Settings "
                    "default to each method's published per-dataset configs; every one can be overridden.")
    ev.add_argument("--task", choices=TASK_CHOICES, default="seg", help="what to evaluate (default seg)")
    ev.add_argument("--dataset", help=f"dataset name: {DATASET_HELP}")
    ev.add_argument("--root", metavar="DIR", help="the dataset folder (e.g. VOCdevkit, or VOC2012 itself)")
    ev.add_argument("--split", help="split to read (default: the benchmark's validation split)")
    ev.add_argument("--classes", metavar="FILE", help="class file instead of the shipped list (generic: "
                                                      "default ROOT/classes.txt)")
    ev.add_argument("--method", default=None,
                    help="methods, comma-separated, e.g. raw,sclip,naclip (default: the task's own: sclip for seg and "
                         "explain, cosine and feature_surgery for multilabel, decomposition and clip_surgery for "
                         "imagenet_seg, the standard ablations for ablation)")
    add_model_options(ev)
    ev.add_argument("--limit", type=int, help="evaluate only the first N items (deterministic order)")
    ev.add_argument("--out", default="results", help="results folder; rerun with the same one to resume "
                                                     "(default results/)")
    ev.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local (one process) or ray (Ray Data, one model per worker; pip install "
                         "'clipsurgery-widgets[distributed]')")
    ev.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    seg = ev.add_argument_group("segmentation settings (default: each method's published configs)")
    seg.add_argument("--short-side", type=int, help="resize so the short side has this many pixels")
    seg.add_argument("--crop", type=int, help="window size in pixels; 0 = whole image")
    seg.add_argument("--stride", type=int, help="window step in pixels")
    seg.add_argument("--logit-scale", type=float, help="softmax temperature")
    seg.add_argument("--prob-thd", type=float, help="below this probability a pixel is class 0")
    seg.add_argument("--area-thd", metavar="F|none", help="drop classes winning at most this pixel share; none = off")
    seg.add_argument("--pamr", type=int, metavar="N", help="PAMR refinement steps (0 = off)")
    other = ev.add_argument_group("settings of the other tasks")
    other.add_argument("--feature-surgery", choices=("default", "on", "off"), default="default",
                       help="explain / imagenet_seg maps: feature surgery as the method's default, on or off")
    other.add_argument("--no-skip-background", action="store_true",
                       help="explain: also score the background class of voc21, context60 and coco_object")
    other.add_argument("--labels", metavar="FILE", help="imagenet_seg: candidate labels, one per line "
                                                       "(default: the 1000 ImageNet class names)")
    other.add_argument("--at-original-size", action="store_true",
                       help="imagenet_seg: compare maps and masks at the image's own size, not the input size")
    other.add_argument("--max-per-class", type=int, metavar="N", help="ablation: at most N images per class")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other task setting, e.g. --set feature_surgery=true (repeatable)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    ev.add_argument("--quiet", action="store_true", help="print nothing but errors")


def task_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The task keywords the options give (only those given, so each method keeps its own defaults)."""
    settings: dict[str, Any] = {}
    for key, value in (("split", args.split), ("classes", args.classes), ("short_side", args.short_side),
                       ("crop", args.crop), ("stride", args.stride), ("logit_scale", args.logit_scale),
                       ("prob_thd", args.prob_thd), ("pamr_steps", args.pamr)):
        if value is not None:
            settings[key] = value
    if args.area_thd is not None:
        settings["area_thd"] = _area(args.area_thd)
    if args.feature_surgery != "default":
        settings["feature_surgery"] = args.feature_surgery == "on"
    if args.no_skip_background:
        settings["skip_background"] = False
    if args.labels is not None:
        settings["labels"] = args.labels
    if args.at_original_size:
        settings["at_original_size"] = True
    if args.max_per_class is not None:
        settings["max_per_class"] = args.max_per_class
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set needs KEY=VALUE, not {item!r}")
        settings[key.strip().replace("-", "_")] = _value(text.strip())
    return settings


def run_evaluate(args: argparse.Namespace) -> int:
    if not args.dataset and args.task == "seg":
        raise UsageError("--dataset is required for --task seg (e.g. --dataset voc21)")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive number of items, not {args.limit}")
    settings = task_settings(args)
    check_precision_option(args)
    from ..engine.precision import using_precision
    from ..evaluation import DatasetLayoutError, ResumeMismatchError, evaluate

    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        with using_precision(args.precision):  # also recorded with the results and sent to Ray workers
            result = evaluate(args.task, dataset=args.dataset, root=args.root, methods=args.method, model=args.model,
                              out=args.out, limit=args.limit, engine=args.engine,
                              progress=not (args.no_progress or args.quiet), pretrained=args.pretrained,
                              checkpoint=args.checkpoint, device=args.device, trust_checkpoint=args.trust_checkpoint,
                              workers=args.workers, **settings)
    except (DatasetLayoutError, ResumeMismatchError) as exc:
        print(f"clipsurgery: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print(f"clipsurgery: interrupted; finished items are kept in {args.out}/items, rerun the same command to "
              f"resume", file=sys.stderr)
        raise
    if not args.quiet:
        print(result.to_markdown())
    say(f"wrote {args.out}/results.json, {args.out}/report.md" +
        (f", {args.out}/per_class.csv" if result.per_class() else "") +
        f" ({result.evaluated} items evaluated, {len(result.skipped)} skipped)")
    return EXIT_OK


def _area(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--area-thd must be a fraction such as 0.1, or none, not {text!r}") from None


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
