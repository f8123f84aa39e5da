"""Explaining a folder of images: Explainer.explain_many (image towers in batches) versus explain() one at a time.

ViT-B-16 architecture with random weights, CPU, fp32, 16 synthetic images of mixed sizes written to a
temporary folder and read back, input size 448, three labels (their features are computed once before
timing, so both paths time the image work only). Prints images per second for each path, the ratio,
the largest difference between the two paths' maps, and the peak RSS
(process high-water mark) after each path's first batch. On the CPU, explain_many's default is one
image per pass (batch_size=None), because this comparison found batches no faster per image there
(0.87-1.03x); pass --batch-size to time the batched tower.

    .venv/bin/python benchmarks/bench_explain_many.py [--images 16] [--size 448] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from clipsurgery_widgets.engine import load_image
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.loading import wrap_model

LABELS = ["red square", "blue circle", "background"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(300, 700)), int(rng.integers(300, 700))
        rgb = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        rgb[h // 4: h // 2, w // 4: w // 2] = (220, 30, 30)
        paths.append(folder / f"img{i:02d}.jpg")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    model = wrap_model(clip, name="ViT-B-16")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        one = Explainer(model, cache_dir=False, precision="fp32")
        many = Explainer(model, cache_dir=False, precision="fp32", max_cached_images=max(16, args.batch_size))
        warm = np.full((64, 64, 3), 127, np.uint8)  # not one of the timed images: their tokens stay uncached
        for explainer in (one, many):  # label features and first-call allocations out of the timing
            explainer.explain(warm, LABELS, size=args.size)
        # The two paths alternate batch by batch (rotating which goes first) so that the shared machine's
        # load drifting over the run does not favour either; times are summed.
        single_s = batched_s = 0.0
        singles, batched, peak = [], [], {}
        for i, first in enumerate(range(0, len(paths), args.batch_size)):
            part = paths[first:first + args.batch_size]
            for path in (("one", "many") if i % 2 == 0 else ("many", "one")):
                start = time.perf_counter()
                if path == "one":
                    singles += [one.explain(load_image(str(p)), LABELS, size=args.size) for p in part]
                    single_s += time.perf_counter() - start
                else:
                    batched += many.explain_many([str(p) for p in part], LABELS, batch_size=args.batch_size,
                                                 size=args.size, progress=False)
                    batched_s += time.perf_counter() - start
                peak.setdefault(path, peak_rss_mb())  # the first batch runs "one" first: its peak is its own
    diff = max(float(np.abs(a.surgery.patch_scores - b.surgery.patch_scores).max()) for a, b in zip(singles, batched))
    print(f"ViT-B-16 (random weights), CPU, {torch.get_num_threads()} threads, fp32; {args.images} images at "
          f"{args.size}, {len(LABELS)} labels")
    print("| path | seconds | images/s | peak RSS MB |")
    print("| --- | --- | --- | --- |")
    print(f"| explain() one at a time | {single_s:.2f} | {args.images / single_s:.2f} | {peak['one']:.0f} |")
    print(f"| explain_many, batches of {args.batch_size} | {batched_s:.2f} | {args.images / batched_s:.2f} | "
          f"{peak['many']:.0f} |")
    print(f"batched / one at a time: {single_s / batched_s:.2f}x images/s; max |map difference| {diff:.1e}")


if __name__ == "__main__":
    main()
