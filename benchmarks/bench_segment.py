"""Cost of segment() per image with VOC21 settings, and the share spent outside encode_dense.

ViT-B-16 with random weights (no download), CPU, one 500x375 image, the VOC21 class list (56
names), short side 336, crop 224, stride 112, method sclip, logit_scale 65, prob_thd 0.1,
area_thd 0.1. Class features are computed once (timed separately) and passed in, as an
evaluation run would cache them. encode_dense is timed through a wrapper installed in the
segmentation module (the model itself is untouched); "outside" is everything else segment does
(resize, window bookkeeping, cosines, upsampling, softmax, area rule, PAMR).
Target: outside share < 15 % without PAMR.

    python benchmarks/bench_segment.py [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import open_clip
import torch

from clipsurgery_widgets.engine.loading import wrap_model
from clipsurgery_widgets.engine.segmentation import class_features, inference, segment

TARGET = 0.15
VOC21 = dict(short_side=336, crop=224, stride=112, logit_scale=65.0, prob_thd=0.1, area_thd=0.1)


class TimedEncoder:
    """Wraps encode_dense, adding up the seconds spent inside it."""

    def __init__(self, encode):
        self.encode, self.seconds, self.calls = encode, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.encode(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def run(model, image, features, repeats: int, **extra) -> dict:
    original = inference.encode_dense
    timer = TimedEncoder(original)
    inference.encode_dense = timer
    try:
        segment(model, image, "voc21", "sclip", text_features=features, **VOC21, **extra)  # warm-up
        totals, dense, outside = [], [], []
        for _ in range(repeats):
            timer.seconds, timer.calls = 0.0, 0
            start = time.perf_counter()
            segment(model, image, "voc21", "sclip", text_features=features, **VOC21, **extra)
            total = time.perf_counter() - start
            totals.append(total)
            dense.append(timer.seconds)
            outside.append((total - timer.seconds) / total)
    finally:
        inference.encode_dense = original
    return {"total": statistics.median(totals), "dense": statistics.median(dense),
            "outside": statistics.median(outside), "calls": timer.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = wrap_model(open_clip.create_model("ViT-B-16", pretrained=None).eval(), name="ViT-B-16")
    image = (np.random.RandomState(0).rand(375, 500, 3) * 255).astype(np.uint8)

    start = time.perf_counter()
    features = class_features(model, "voc21")
    text_s = time.perf_counter() - start
    print(f"threads {torch.get_num_threads()}; text features for {len(features.names)} names x 80 templates: "
          f"{text_s:.2f} s (once, cached)")
    for label, extra in (("no PAMR", {}), ("PAMR 10 steps", {"pamr_steps": 10})):
        r = run(model, image, features, args.repeats, **extra)
        verdict = "" if extra else f"  (target < {TARGET:.0%}: {'ok' if r['outside'] < TARGET else 'MISSED'})"
        print(f"{label:>14}: {r['total']:.2f} s/image, encode_dense {r['dense']:.2f} s in {r['calls']} calls, "
              f"outside {r['outside']:.1%}{verdict}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
