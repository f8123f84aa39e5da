"""Multi-label feature surgery: closed form vs the authors' 4-D formulation (docs/algorithms.md#feature-surgery).

1,000 labels against one 512 px ViT-B/16 image (1 + 32*32 tokens, D = 512), CPU.
Target: the closed form needs at least 10x less peak memory.

How memory is measured: each formulation runs in a fresh subprocess. After the inputs exist, the
worker resets the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs), runs the
formulation once and reads VmHWM from /proc/self/status: peak = VmHWM - VmRSS before the run.
MALLOC_MMAP_THRESHOLD_ is fixed so that large tensors are always mmapped and freed memory goes
back to the kernel, which makes RSS follow the live tensors (Linux only).

    .venv/bin/python benchmarks/bench_surgery_memory.py [--labels 1000] [--side 32]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

DIM = 512


def inputs(num_labels: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(1, 1 + side * side, DIM, generator=gen), dim=-1)
    text = F.normalize(torch.randn(num_labels, DIM, generator=gen), dim=-1)
    return image, text


def four_d(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The authors' formulation: element-wise products [B, 1+N, T, C], weighted, de-meaned, summed."""
    prob = torch.softmax(2 * (image[:, :1, :] @ text.T), dim=-1)  # [B, 1, T]
    w = prob / prob.mean(-1, keepdim=True)
    feats = image[:, :, None, :] * text[None, None, :, :]
    feats = feats * w[:, :, :, None]
    redundant = feats.mean(2, keepdim=True)
    return (feats - redundant).sum(-1)


def closed_form(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    from clipsurgery_widgets.engine.surgery import feature_surgery

    return feature_surgery(image, text, mode="labels")


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M).group(1))


def worker(kind: str, num_labels: int, side: int, repeats: int) -> dict:
    fn = {"closed": closed_form, "4d": four_d}[kind]
    image, text = inputs(num_labels, side)
    closed_form(image[:, :4], text[:4])  # import and warm up outside the measurement
    with torch.no_grad():
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        start = time.perf_counter()
        out = fn(image, text)
        first = time.perf_counter() - start
        peak = _status_kb("VmHWM") - before
        times = [first]
        for _ in range(repeats - 1):
            del out
            start = time.perf_counter()
            out = fn(image, text)
            times.append(time.perf_counter() - start)
        check = out[0, [0, 1, 500, -1]][:, [0, 1, -1]].tolist()
    return {"peak_mb": peak / 1024, "seconds": statistics.median(times), "check": check,
            "shape": list(out.shape)}


def run_worker(kind: str, args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--worker", kind, "--labels", str(args.labels), "--side", str(args.side),
           "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--side", type=int, default=32, help="patch grid side (512 px / 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["closed", "4d"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.labels, args.side, args.repeats)))
        return

    closed, literal = run_worker("closed", args), run_worker("4d", args)
    tokens = 1 + args.side ** 2
    products_mb = tokens * args.labels * DIM * 4 / 2 ** 20
    scores_mb = tokens * args.labels * 4 / 2 ** 20
    diff = max(abs(a - b) for ra, rb in zip(closed["check"], literal["check"]) for a, b in zip(ra, rb))
    print(f"feature surgery, {args.labels} labels, 1 image of {tokens} tokens, D={DIM}, float32, CPU, "
          f"{torch.get_num_threads()} threads; peak = VmHWM - VmRSS in a fresh process; time = median of "
          f"{args.repeats}")
    print("| formulation | peak MB | seconds |")
    print("| --- | --- | --- |")
    print(f"| closed form [B,1+N,T] | {closed['peak_mb']:.1f} | {closed['seconds']:.3f} |")
    print(f"| 4-D [B,1+N,T,C] | {literal['peak_mb']:.1f} | {literal['seconds']:.3f} |")
    print(f"(one [B,1+N,T,C] tensor is {products_mb:.0f} MB; one [B,1+N,T] score tensor is {scores_mb:.1f} MB)")
    ratio = literal["peak_mb"] / max(closed["peak_mb"], 1e-9)
    print(f"memory ratio 4-D / closed: {ratio:.0f}x (target >= 10x: {'PASS' if ratio >= 10 else 'FAIL'}); "
          f"time ratio: {literal['seconds'] / closed['seconds']:.1f}x; "
          f"max |difference| on sampled scores {diff:.1e}")


if __name__ == "__main__":
    main()
