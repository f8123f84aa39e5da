"""Cost of raw + CLIP Surgery tokens in one pass versus plain model.encode_image.

Real-size architectures with random weights (no download), CPU, 224x224, batch 1. Both paths are
timed back to back in each repeat, alternating which goes first; the headline ratio is the median
of the per-repeat ratios after warm-up, which is robust to the machine's load drifting between
repeats. Target: <= 1.15.

    python benchmarks/bench_towers.py [--repeats 15] [--models ViT-B-16 RN50] [--depth 6] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch

from clipsurgery_widgets.engine.towers.encode import encode_image_tokens

TARGET = 1.15


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, repeats: int, warmup: int, depth: int) -> dict:
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    pixels = torch.randn(1, 3, 224, 224)

    def plain():
        with torch.no_grad():
            return model.encode_image(pixels)

    def surgery():
        return encode_image_tokens(model, pixels, depth=depth)

    drift = (surgery().raw[:, 0] - plain()).abs().max().item()
    for _ in range(warmup):
        plain(), surgery()
    t_plain, t_surgery = [], []
    for i in range(repeats):  # alternate the order so neither path always runs second
        pair = (plain, surgery) if i % 2 == 0 else (surgery, plain)
        times = {fn: timed(fn) for fn in pair}
        t_plain.append(times[plain])
        t_surgery.append(times[surgery])
    plain_s, surgery_s = statistics.median(t_plain), statistics.median(t_surgery)
    # Paired ratios: each repeat times both paths back to back, so their median shrugs off load spikes.
    paired = statistics.median(s / p for s, p in zip(t_surgery, t_plain))
    return {"model": name, "plain": plain_s, "surgery": surgery_s, "ratio": surgery_s / plain_s,
            "paired": paired, "best": min(t_surgery) / min(t_plain), "drift": drift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-16", "RN50"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 224x224, batch 1, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(f"{'model':<10} {'encode_image':>13} {'raw+surgery':>12} {'ratio':>7} {'paired':>7} {'best':>7}  "
          f"{'|tok0 - encode_image|':>22}")
    rows = [bench(name, args.repeats, args.warmup, args.depth) for name in args.models]
    for r in rows:
        verdict = "ok" if r["paired"] <= TARGET else f"over the {TARGET}x target"
        print(f"{r['model']:<10} {r['plain'] * 1e3:>11.1f}ms {r['surgery'] * 1e3:>10.1f}ms {r['ratio']:>6.3f}x "
              f"{r['paired']:>6.3f}x {r['best']:>6.3f}x  {r['drift']:>22.2e}  {verdict}")
    print("paired (the verdict) = median over repeats of raw+surgery / encode_image timed back to back; "
          "ratio = median / median; best = min / min.")


if __name__ == "__main__":
    main()
