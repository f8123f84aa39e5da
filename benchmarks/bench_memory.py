"""Peak memory of explain() on the inputs that used to exhaust it (tiny-random-vit, CPU).

Cases, each in a fresh subprocess so that one peak cannot hide another:

- ``photo12mp``: a 12 MP photo (3000 x 4000) with the 80 COCO labels, method "both", input 224;
  then one label's full-size map (``map_for``) and the argmax segmentation, as a figure would.
- ``labels1000``: 1,000 labels on ``sample:cat``, method "both", no disk cache (first run).
  Target: peak RSS under 1.5 GB.
- ``max_size``: the largest input the default token limit admits (``MAX_TOKENS`` patch tokens),
  80 labels, method "both".

Reported: the process's peak RSS (ru_maxrss: Python, torch and the model included), its RSS
before the case ran, and the difference. Linux/macOS.

    .venv/bin/python benchmarks/bench_memory.py [--case photo12mp|labels1000|max_size]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = ("photo12mp", "labels1000", "max_size")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _labels(count: int) -> list[str]:
    from clipsurgery_widgets.data.presets import COCO_80

    if count <= len(COCO_80):
        return list(COCO_80[:count])
    pool = Path(__file__).resolve().parents[1] / "clipsurgery_widgets" / "data" / "text_pool.txt"
    lines = list(dict.fromkeys(line.strip() for line in pool.read_text().splitlines() if line.strip()))
    return lines[:count]


def run_case(name: str) -> dict:
    import numpy as np

    from clipsurgery_widgets.engine.explainer import Explainer
    from clipsurgery_widgets.engine.images import sample_image
    from clipsurgery_widgets.engine.limits import MAX_TOKENS
    from clipsurgery_widgets.engine.loading import load_model

    explainer = Explainer(load_model("tiny-random-vit", device="cpu"), cache_dir=False)
    patch = explainer.model.patch_size
    if name == "photo12mp":
        rgb = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
        labels, size = _labels(80), 224
    elif name == "labels1000":
        rgb, labels, size = sample_image("cat"), _labels(1000), 224
    else:
        side = int(MAX_TOKENS ** 0.5) * patch
        rgb, labels, size = sample_image("cat"), _labels(80), side
    before = _rss_mb()
    t0 = time.perf_counter()
    result = explainer.explain(rgb, labels, method="both", size=size)
    one = result.map_for(labels[0])
    segmentation = result.segmentation()
    seconds = time.perf_counter() - t0
    assert one.shape == rgb.shape[:2] and segmentation.shape == rgb.shape[:2]
    peak = _peak_mb()
    return {"case": name, "labels": len(labels), "image": f"{rgb.shape[1]}x{rgb.shape[0]}",
            "input": f"{result.input_size[1]}x{result.input_size[0]}", "tokens": result.grid[0] * result.grid[1],
            "rss_before_mb": round(before), "peak_rss_mb": round(peak), "increase_mb": round(peak - before),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, help="run one case in this process (default: each in a subprocess)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{row['case']:>10}: {row['labels']:5d} labels, image {row['image']:>9}, input {row['input']:>9} "
              f"({row['tokens']} tokens): peak RSS {row['peak_rss_mb']} MB (before {row['rss_before_mb']} MB, "
              f"+{row['increase_mb']} MB) in {row['seconds']} s")
    print("Target: labels1000 peak RSS < 1500 MB.")


if __name__ == "__main__":
    main()
