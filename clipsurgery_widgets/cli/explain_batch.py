"""``clipsurgery explain DIR_or_GLOB --out-dir figs/``: one figure per image, image towers in batches.

Figures are named after their images (``figs/NAME.png``; the --out suffix picks the format). Figures
that already exist are skipped unless --overwrite, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

from .common import (EXIT_OK, FIGURE_SUFFIXES, UsageError, check_depth_after_loading, check_model_options,
                     load_cli_model, reporter, save)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GLOB_CHARACTERS = "*?["


def is_many(image: str) -> bool:
    """True when IMAGE names a folder or a glob pattern rather than one image."""
    return Path(image).is_dir() or any(ch in image for ch in GLOB_CHARACTERS)


def find_images(pattern: str) -> list[Path]:
    """Image files of a folder (not recursive) or a glob pattern, sorted by path."""
    path = Path(pattern)
    candidates = path.iterdir() if path.is_dir() else (Path(p) for p in glob.glob(pattern, recursive=True))
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def figure_paths(images: list[Path], out_dir: Path, suffix: str) -> list[Path]:
    """out_dir/STEM+suffix per image; images sharing a stem get their extension in the name too."""
    stems = [p.stem for p in images]
    return [out_dir / ((p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}") + suffix)
            for p in images]


def run_explain_many(args: argparse.Namespace, labels: list[str], compare: list[str] | None,
                     size: int | tuple[int, int]) -> int:
    if args.out_dir is None:
        raise UsageError(f"{args.image!r} is a folder or pattern: give --out-dir DIR for its figures")
    if args.batch_size is not None and (not isinstance(args.batch_size, int) or args.batch_size < 1):
        raise UsageError(f"--batch-size must be a positive integer, not {args.batch_size!r}")
    suffix = Path(args.out).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise UsageError(f"--out must end in .png, .svg, .pdf or .jpg, not {args.out!r} (it picks the format)")
    images = find_images(args.image)
    if not images:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {args.image!r}")
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise UsageError(f"--cmap {args.cmap!r} is not a matplotlib colour map (try jet, viridis, inferno)")
    check_model_options(args)
    out_dir = Path(args.out_dir)
    targets = figure_paths(images, out_dir, suffix)
    todo = [(image, out) for image, out in zip(images, targets) if args.overwrite or not out.exists()]
    say = reporter(args)
    skipped = len(images) - len(todo)
    if not todo:
        say(f"all {len(images)} figure(s) already exist in {out_dir} (use --overwrite to redo them)")
        return EXIT_OK
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..engine import Explainer
    from .explain import draw_figure

    t0 = time.perf_counter()
    model = load_cli_model(args, say, "[1/2]")
    check_depth_after_loading(args, model)
    say(f"[2/2] explaining {len(todo)} image(s) from {args.image} with {len(labels)} label(s) at {size}"
        + (f"; {skipped} already written" if skipped else ""))
    explainer = Explainer(model, precision=args.precision, max_cached_images=max(16, args.batch_size or 0))
    surgery = {"default": None, "on": True, "off": False}[args.feature_surgery]
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(index: int, rgb, explanation) -> None:  # as each image is done: an interrupted run keeps them
        fig = draw_figure(args, rgb, explanation, compare)
        save(fig, args, todo[index][1])
        plt.close(fig)

    explainer.explain_many([str(image) for image, _ in todo], labels, batch_size=args.batch_size,
                           progress=not args.quiet, on_result=write,
                           method=compare[0] if compare else args.method, methods=compare,
                           redundancy=args.redundancy, size=size, depth=args.depth, feature_surgery=surgery)
    say(f"wrote {len(todo)} figure(s) to {out_dir} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK
