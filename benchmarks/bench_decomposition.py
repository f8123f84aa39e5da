"""Text-based decomposition (docs/algorithms.md#text-based-decomposition): memory per image and time against encode_image.

ViT-B-16 architecture with random weights, CPU, one 224x224 image. Reports the bytes held by the
terms (spatial and not), the peak resident memory added by a spatial decomposition (from a
process-wide high-water mark, so run it in a fresh process), and time ratios to encode_image.
Targets: spatial terms about 58 MB per image; the sum of the terms matches encode_image / norm
to 1e-4.

    .venv/bin/python benchmarks/bench_decomposition.py [--model ViT-B-16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import open_clip
import torch

from clipsurgery_widgets.engine.decomposition.terms import (
    decompose,
    decomposition_memory,
)


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        reference = model.encode_image(pixels)
    reference = reference / reference.norm(dim=-1, keepdim=True)
    decompose(model, pixels, spatial=False)  # warm-up: first-call allocations of the plain path

    before = peak_rss_mb()
    spatial_s, spatial = median_time(lambda: decompose(model, pixels, spatial=True), 1)
    peak_added = peak_rss_mb() - before
    with torch.no_grad():
        encode_s, _ = median_time(lambda: model.encode_image(pixels), args.repeats)
    spatial_s, spatial = median_time(lambda: decompose(model, pixels, spatial=True), args.repeats)
    flat_s, flat = median_time(lambda: decompose(model, pixels, spatial=False), args.repeats)

    error = max(float((spatial.total() - reference).abs().max()), float((flat.total() - reference).abs().max()))
    print(f"model {args.model} (random weights), one 224x224 image, CPU, {torch.get_num_threads()} threads")
    print(f"spatial terms: {spatial.nbytes / 1e6:.1f} MB held (estimate {decomposition_memory(model) / 1e6:.1f} MB); "
          f"peak resident memory added by the first spatial pass: {peak_added:.0f} MB")
    print(f"non-spatial terms: {flat.nbytes / 1e6:.2f} MB")
    print(f"encode_image {encode_s * 1e3:.0f} ms; decompose spatial {spatial_s * 1e3:.0f} ms "
          f"({spatial_s / encode_s:.1f}x), non-spatial {flat_s * 1e3:.0f} ms ({flat_s / encode_s:.1f}x)")
    print(f"max |sum of terms - encode_image / norm| = {error:.2e} (target <= 1e-4): "
          f"{'OK' if error <= 1e-4 else 'FAIL'}")


if __name__ == "__main__":
    main()
