"""Throughput of the segmentation evaluation and the runner's overhead over segment() itself.

ViT-B-16 with random weights (no download), CPU, a VOC-layout folder of N random 500x375 images
written to a temporary directory, method sclip at SCLIP's VOC21 settings (short side 336, crop
224, stride 112, logit scale 65, prob_thd 0.1, area_thd 0.1), the 80 templates. Reported:
- images per second of the runner's item loop;
- overhead = item-loop seconds / sum of the seconds spent inside segment() (timed by a wrapper
  installed in the seg task module), target <= 1.1: mask reading, confusion counts and the
  per-item .npz writes must cost little next to the model;
- the one-off costs (class text features once per run, model load) separately.
The Ray comparison (two workers versus one process) is `ray_comparison` below.

    python benchmarks/bench_evaluation.py [--images 6] [--threads N] [--fast-text] [--ray]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from clipsurgery_widgets.engine.loading import wrap_model
from clipsurgery_widgets.evaluation import evaluate
from clipsurgery_widgets.evaluation.tasks import seg as seg_module

TARGET = 1.1


def write_voc(root: Path, images: int, seed: int = 0) -> Path:
    """A VOCdevkit/VOC2012 folder of random 500x375 images with palette masks (0-20, some 255)."""
    rng = np.random.default_rng(seed)
    folder = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2007_{i:06d}" for i in range(images)]
    for item in ids:
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(folder / "JPEGImages" / f"{item}.jpg")
        labels = np.kron(rng.integers(0, 21, (12, 16)), np.ones((32, 32), np.int64))[:375, :500]
        labels[rng.random(labels.shape) < 0.03] = 255
        mask = Image.fromarray(labels.astype(np.uint8))
        mask.putpalette(rng.integers(0, 256, 768).astype(np.uint8).tolist())
        mask.save(folder / "SegmentationClass" / f"{item}.png")
    (folder / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return root / "VOCdevkit"


class TimedSegment:
    """Wraps segment(), adding up the seconds spent inside it."""

    def __init__(self, function):
        self.function, self.seconds, self.calls = function, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def local_run(model, root: Path, out: Path, templates) -> dict:
    """One runner pass with segment() timed; returns the timings."""
    timer = TimedSegment(seg_module.segment)
    seg_module.segment = timer
    try:
        start = time.perf_counter()
        result = evaluate("seg", "voc21", root, methods="sclip", model=model, out=out, progress=False,
                          templates=templates)
        wall = time.perf_counter() - start
    finally:
        seg_module.segment = timer.function
    t = result.timings
    return {"wall": wall, "items": t["items_seconds"], "prepare": t["prepare_seconds"], "segment": timer.seconds,
            "calls": timer.calls, "images": result.evaluated, "miou": result.methods["sclip"]["miou"]}


# ==== Ray comparison: filled in by the Ray engine's owner (EVAL-TASKS) ===========================
def ray_comparison(model_name: str, root: Path, out: Path, templates, workers: int = 2) -> dict | None:
    """Ray mode with ``workers`` actors versus one process on the same folder (no target on 2 cores).

    Both runs load the same random weights from a checkpoint written here (seed 0, as main()'s
    model), so each Ray actor builds exactly the local model. The local Ray instance is started
    before the timed run (its start-up is reported apart); the Ray time includes the actors' own
    model loads and class text features, which a single process pays once.

    Returns {"local_seconds", "ray_seconds", "ray_init_seconds", "workers", "equal"}.
    """
    import os

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    weights = out / "random-weights.pt"
    torch.save(open_clip.create_model(model_name, pretrained=None).state_dict(), weights)
    common = dict(methods="sclip", model=model_name, checkpoint=weights, pretrained=None, progress=False,
                  templates=templates)
    start = time.perf_counter()
    local = evaluate("seg", "voc21", root, **common)
    local_s = time.perf_counter() - start
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        distributed = evaluate("seg", "voc21", root, engine="ray", workers=workers, **common)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"local_seconds": local_s, "ray_seconds": ray_s, "ray_init_seconds": init_s, "workers": workers,
            "equal": local.methods == distributed.methods, "images": local.evaluated}
# ==================================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fast-text", action="store_true", help="one template instead of 80 (quicker set-up)")
    parser.add_argument("--ray", action="store_true", help="also run the Ray comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = wrap_model(open_clip.create_model("ViT-B-16", pretrained=None).eval(), name="ViT-B-16")
    load_s = time.perf_counter() - start
    templates = ("a photo of a {}.",) if args.fast_text else None
    with tempfile.TemporaryDirectory() as tmp:
        root = write_voc(Path(tmp), args.images)
        r = local_run(model, root, Path(tmp) / "out", templates)
        ratio = r["items"] / r["segment"]
        print(f"threads {torch.get_num_threads()}; ViT-B-16 (random weights) built in {load_s:.1f} s; "
              f"{r['images']} images 500x375, sclip at VOC21 settings")
        print(f"class text features (once per run, {'1' if templates else '80'} templates): {r['prepare']:.1f} s")
        print(f"item loop: {r['items']:.1f} s = {r['images'] / r['items']:.3f} images/s "
              f"({r['items'] / r['images']:.2f} s/image); inside segment(): {r['segment']:.1f} s in {r['calls']} calls")
        print(f"runner overhead: loop / segment() = {ratio:.3f} (target <= {TARGET}: "
              f"{'ok' if ratio <= TARGET else 'MISSED'}); whole call incl. text features / segment() = "
              f"{r['wall'] / r['segment']:.3f}")
        again = time.perf_counter()
        evaluate("seg", "voc21", root, methods="sclip", model=model, out=Path(tmp) / "out", progress=False,
                 templates=templates)
        print(f"rerun of the finished run (resume, nothing to do): {time.perf_counter() - again:.2f} s")
        if args.ray:
            comparison = ray_comparison("ViT-B-16", root, Path(tmp) / "ray", templates)
            if comparison is None:
                print("Ray comparison: not implemented yet (see ray_comparison)")
            else:
                print(f"Ray, {comparison['workers']} workers: {comparison['ray_seconds']:.1f} s versus one process "
                      f"{comparison['local_seconds']:.1f} s for {comparison['images']} images, whole calls incl. "
                      f"model loads and text features (ratio {comparison['ray_seconds'] / comparison['local_seconds']:.2f}; "
                      f"Ray start-up {comparison['ray_init_seconds']:.1f} s apart; identical numbers: "
                      f"{comparison['equal']})")


if __name__ == "__main__":
    main()
