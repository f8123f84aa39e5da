"""Explainer.explain latency on the CPU with the ViT-B-16 architecture (random weights).

Target: a cached image with a cached label explains in at most 50 ms at 224. Also reports a new
label on a cached image (text encoding of 85 prompts) and a new image (one forward pass).
Times are medians over repeats measured in this one run.

    .venv/bin/python benchmarks/bench_explainer.py
"""
from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import open_clip
import torch

from clipsurgery_widgets.engine import Explainer, wrap_model


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).eval()
    explainer = Explainer(wrap_model(model, name="ViT-B-16"), cache_dir=tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    labels = ["cat", "dog", "grass", "sky"]
    explainer.explain(photo, labels)  # warm the caches

    cached = median_ms(lambda: explainer.explain(photo, labels), 20)
    cached_one = median_ms(lambda: explainer.explain(photo, ["cat"]), 20)
    counter = iter(range(10_000))
    new_label = median_ms(lambda: explainer.explain(photo, labels + [f"new label {next(counter)}"]), 5)
    new_image = median_ms(lambda: explainer.explain(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), labels), 5)

    print("Explainer.explain, ViT-B-16 (random weights), CPU, 224 input, 640x480 image, median ms")
    print(f"  cached image, 4 cached labels : {cached:8.1f} ms   (target <= 50 ms: {'ok' if cached <= 50 else 'MISSED'})")
    print(f"  cached image, 1 cached label  : {cached_one:8.1f} ms")
    print(f"  cached image, one new label   : {new_label:8.1f} ms   (85 prompts through the text tower)")
    print(f"  new image, cached labels      : {new_image:8.1f} ms   (one forward pass, both paths)")
    print(f"ratio cached / target           : {cached / 50:.2f}")


if __name__ == "__main__":
    main()
