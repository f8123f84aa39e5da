"""SamRefiner latency on the CPU: SAM vit_b architecture (random weights) and the tiny test SAM.

Reports, for a 480x640 photo: the first set_image (image encoder at 1024), set_image of the same
image again (memory cache), set_image from the disk cache in a fresh refiner, and predict with
3 points (median of 10), plus the one-off weight fingerprint. Ratios come from this one run.

    .venv/bin/python benchmarks/bench_sam.py [--skip-vit-b]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from clipsurgery_widgets.engine.sam.refiner import SamRefiner, build_tiny_sam

POINTS = [[200, 150], [400, 300], [50, 420]]
LABELS = [1, 1, 0]


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_s(fn, repeats: int) -> float:
    return statistics.median(seconds(fn) for _ in range(repeats))


def measure(name: str, sam: torch.nn.Module, photo: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as cache:
        refiner = SamRefiner(sam, cache_dir=cache)
        fingerprint = seconds(lambda: refiner.fingerprint)
        first = seconds(lambda: refiner.set_image(photo))
        again = median_s(lambda: refiner.set_image(photo), 5)
        refiner.predict(points=POINTS, labels=LABELS)  # warm-up
        predict = median_s(lambda: refiner.predict(points=POINTS, labels=LABELS), 10)
        fresh = SamRefiner(sam, cache_dir=cache, fingerprint=refiner.fingerprint)
        from_disk = seconds(lambda: fresh.set_image(photo))
    print(f"{name}: fingerprint {fingerprint * 1000:.0f} ms | set_image computed {first * 1000:.0f} ms, "
          f"memory cache {again * 1000:.1f} ms, disk cache {from_disk * 1000:.1f} ms | "
          f"predict (3 points, best of 3) median of 10: {predict * 1000:.1f} ms")
    print(f"  ratios: predict / set_image = {predict / first:.4f}; memory-cached / computed set_image = "
          f"{again / first:.4f}; disk-cached / computed = {from_disk / first:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-vit-b", action="store_true", help="only the tiny SAM (seconds instead of ~1 min)")
    args = parser.parse_args()
    photo = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    measure("tiny SAM (256 px)", build_tiny_sam(), photo)
    if not args.skip_vit_b:
        from segment_anything import sam_model_registry

        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            sam = sam_model_registry["vit_b"](checkpoint=None).eval()
        print(f"vit_b built with random weights in {time.perf_counter() - t0:.1f} s")
        measure("SAM vit_b (1024 px)", sam, photo)


if __name__ == "__main__":
    main()
