"""Prompt-ensemble text encoding: causal truncation vs the full 77-token context (docs/algorithms.md#text-features).

One label, the 85 default templates, ViT-B-16 architecture with random weights, CPU.
Target: the truncated path is at least 3x faster and gives the same features (to 1e-5).

    .venv/bin/python benchmarks/bench_text.py [--label dog] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.text.encoding import TEMPLATES, encode_texts


def full_context_ensemble(model, tokenizer, label: str) -> torch.Tensor:
    """The plain way: encode_text over all 77 positions, normalise, average, normalise."""
    with torch.no_grad():
        feats = model.encode_text(tokenizer([t.format(label) for t in TEMPLATES]))
    return F.normalize(F.normalize(feats, dim=-1).mean(0), dim=-1)


def median_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="dog")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    tokens = tokenizer([t.format(args.label) for t in TEMPLATES])
    longest = int((tokens != 0).sum(dim=1).max())

    encode_texts(model, tokenizer, [args.label])  # warm-up (first-call allocations)
    fast_s, fast = median_time(lambda: encode_texts(model, tokenizer, [args.label])[0], args.repeats)
    full_s, full = median_time(lambda: full_context_ensemble(model, tokenizer, args.label), args.repeats)
    diff = float((fast - full).abs().max())

    print(f"ViT-B-16 (random weights), CPU, {torch.get_num_threads()} threads; label {args.label!r}, "
          f"{len(TEMPLATES)} prompts, longest {longest} of 77 tokens; median of {args.repeats}")
    print(f"| path | seconds |")
    print(f"| --- | --- |")
    print(f"| full 77-token context | {full_s:.3f} |")
    print(f"| causal truncation | {fast_s:.3f} |")
    ratio = full_s / fast_s
    print(f"speed-up: {ratio:.1f}x (target >= 3x: {'PASS' if ratio >= 3 else 'FAIL'}); "
          f"max |difference| {diff:.2e} (target <= 1e-5: {'PASS' if diff <= 1e-5 else 'FAIL'})")


if __name__ == "__main__":
    main()
