"""Cost of all seven dense methods from one shared pass versus one plain model.encode_image.

ViT-B-16 with random weights (no download), CPU, 224x224, batch 1. In each repeat the paths run back
to back (order rotated), so load drifting on the shared machine hits them alike; the headline ratio
is the median of per-repeat ratios after warm-up. Target: encode_dense_many(all seven) <= 1.6x.
For reference the seven methods are also timed as seven separate encode_dense calls.

Memory: torch's CPU allocations are invisible to tracemalloc, so the peak resident set size is
read from Linux. Each path runs once in its own child process forked right after the model is
built (before any forward pass, so neither path profits from memory the other left cached):
/proc/self/clear_refs is written "5" (resets VmHWM), and the peak is VmHWM after the call minus
VmRSS before it. Without /proc it falls back to resource.getrusage ru_maxrss deltas.

    python benchmarks/bench_dense.py [--repeats 9] [--warmup 2] [--threads 1] [--size 224]
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time

import open_clip
import torch

from clipsurgery_widgets.engine.towers.dense import METHODS, encode_dense, encode_dense_many

TARGET = 1.6


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_here(fn) -> tuple[float, str]:
    """Peak extra resident memory (MB) while fn runs in this process, and how it was measured."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - before) / 1024, "VmHWM - VmRSS, clear_refs reset, fresh fork"
    except (OSError, TypeError):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "ru_maxrss delta, fresh fork"


def peak_mb(fn) -> tuple[float, str]:
    """_peak_here in a forked child, so earlier calls' cached memory doesn't hide this one's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, leave without running the parent's cleanup
        os.close(read)
        try:
            mb, how = _peak_here(fn)
            os.write(write, f"{mb}|{how}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        text = fh.read()
    os.waitpid(pid, 0)
    mb, how = text.split("|", 1)
    return float(mb), how


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    pixels = torch.randn(1, 3, args.size, args.size)
    names = list(METHODS)

    def plain():
        with torch.no_grad():
            return model.encode_image(pixels)

    def shared():
        return encode_dense_many(model, pixels, names)

    def separate():
        return [encode_dense(model, pixels, name) for name in names]

    mem = {name: peak_mb(fn) for name, fn in (("plain", plain), ("shared", shared))}  # before any warm-up
    drift = max(float((r.tokens[:, 0] - plain()).abs().max()) for r in shared().values())
    for _ in range(args.warmup):
        plain(), shared(), separate()
    paths = {"plain": plain, "shared": shared, "separate": separate}
    times: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    for i in range(args.repeats):
        for name in order[i % 3:] + order[:i % 3]:  # rotate which path runs first
            times[name].append(timed(paths[name]))
    med = {name: statistics.median(t) for name, t in times.items()}
    paired = statistics.median(s / p for s, p in zip(times["shared"], times["plain"]))
    paired_sep = statistics.median(s / p for s, p in zip(times["separate"], times["plain"]))
    how = mem["plain"][1]

    print(f"ViT-B-16 random weights, CPU, {args.size}x{args.size}, batch 1, {args.threads} thread(s), "
          f"{args.repeats} repeats after {args.warmup} warm-up")
    print(f"  encode_image                     median {med['plain'] * 1e3:8.1f} ms")
    print(f"  encode_dense_many (7 methods)    median {med['shared'] * 1e3:8.1f} ms   "
          f"ratio {paired:.2f}x (paired median; ratio of medians {med['shared'] / med['plain']:.2f}x)  "
          f"target <= {TARGET}x  {'OK' if paired <= TARGET else 'OVER'}")
    print(f"  7 x encode_dense (separately)    median {med['separate'] * 1e3:8.1f} ms   ratio {paired_sep:.2f}x")
    print(f"  peak extra memory ({how}): encode_image {mem['plain'][0]:.1f} MB, "
          f"encode_dense_many {mem['shared'][0]:.1f} MB")
    print(f"  token 0 vs encode_image, max abs difference over the 7 methods: {drift:.2e}")


if __name__ == "__main__":
    main()
