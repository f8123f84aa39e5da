"""Prompt-ensemble text encoding: template prefixes computed once versus the earlier paths (docs/algorithms.md#text-features).

ViT-B-16 architecture with random weights, CPU, the 85 default templates. Paths compared in one run:
  full    every prompt through model.encode_text at the full 77-token context;
  before  the previous encode_texts: batches of 256 prompts, each truncated to its longest prompt
          (encode_tokens, open_clip's own blocks);
  now     encode_texts: each template's prefix once, then only label + suffix tokens, in length-sorted chunks.
Targets: five multi-word labels, fp32: now >= 8.5x faster than full; 100 labels: now >= 1.5x faster than
before in fp32 and >= 3x in bf16 (when the engine has a precision setting); features equal to full within
1e-5 in fp32. Peak RSS (the process's high-water mark after each row) is printed beside each time.

    .venv/bin/python benchmarks/bench_text.py [--repeats 3] [--labels 100]
"""
from __future__ import annotations

import argparse
import inspect
import resource
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from clipsurgery_widgets.engine.text.encoding import TEMPLATES, _prompt_batches, encode_texts, encode_tokens

FIVE = ["golden retriever", "red double-decker bus", "traffic light", "person riding a bicycle", "coffee mug"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def full_context(model, tokenizer, labels) -> torch.Tensor:
    """Every prompt at the full 77-token context, normalised, averaged, normalised."""
    rows = []
    with torch.no_grad():
        for label in labels:
            feats = model.encode_text(tokenizer([t.replace("{}", label) for t in TEMPLATES]))
            rows.append(F.normalize(F.normalize(feats, dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


def before(model, tokenizer, labels) -> torch.Tensor:
    """The previous encode_texts loop: causal truncation per batch of 256 prompts."""
    sums = torch.zeros(len(labels), model.text_projection.shape[1])
    with torch.no_grad():
        for label_index, _, prompts in _prompt_batches(labels, TEMPLATES, 256):
            feats = encode_tokens(model, tokenizer(prompts)).float()
            sums.index_add_(0, torch.as_tensor(label_index), F.normalize(feats, dim=-1))
    return F.normalize(sums, dim=-1)


def median_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labels", type=int, default=100, help="labels in the many-labels case")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    has_precision = "precision" in inspect.signature(encode_texts).parameters
    many = [name for name in IMAGENET_CLASSNAMES[: args.labels]]
    print(f"ViT-B-16 (random weights), CPU, {torch.get_num_threads()} threads, {len(TEMPLATES)} templates; "
          f"5 labels: median of {args.repeats}; {len(many)} labels: one run, in 4 interleaved slices")
    print("| case | path | seconds | peak RSS MB | max abs diff to full / before |")
    print("| --- | --- | --- | --- | --- |")

    encode_texts(model, tokenizer, FIVE[:1])  # warm-up (first-call allocations)
    # Paths alternate within each repeat (rotating order) so that the shared machine's load drifting
    # between phases does not favour one of them.
    paths = {"full": lambda: full_context(model, tokenizer, FIVE), "before": lambda: before(model, tokenizer, FIVE),
             "now": lambda: encode_texts(model, tokenizer, FIVE)}
    times, outs, rss = {k: [] for k in paths}, {}, {}
    order = list(paths)
    for i in range(args.repeats):
        for key in order[i % 3:] + order[: i % 3]:
            seconds, outs[key] = median_time(paths[key], 1)
            times[key].append(seconds)
            rss[key] = peak_rss_mb()
    full_s, before_s, now_s = (statistics.median(times[k]) for k in order)
    full, old, now = outs["full"], outs["before"], outs["now"]
    diff5 = float((now - full).abs().max())
    print(f"| 5 labels | full 77-token context | {full_s:.3f} | {rss['full']:.0f} | - |")
    print(f"| 5 labels | before (truncated batches) | {before_s:.3f} | {rss['before']:.0f} | "
          f"{float((old - full).abs().max()):.1e} |")
    print(f"| 5 labels | now (shared prefixes) | {now_s:.3f} | {rss['now']:.0f} | {diff5:.1e} |", flush=True)

    # Many labels: the three paths interleaved over slices of the label list, times summed.
    many_paths = {"before": lambda part: before(model, tokenizer, part),
                  "now fp32": lambda part: encode_texts(model, tokenizer, part)}
    if has_precision:
        encode_texts(model, tokenizer, FIVE[:1], precision="bf16")  # warm-up
        many_paths["now bf16"] = lambda part: encode_texts(model, tokenizer, part, precision="bf16")
    totals, pieces, many_rss = {k: 0.0 for k in many_paths}, {k: [] for k in many_paths}, {}
    keys = list(many_paths)
    step = max(1, len(many) // 4)
    for i, first in enumerate(range(0, len(many), step)):
        part = many[first:first + step]
        for key in keys[i % len(keys):] + keys[: i % len(keys)]:
            start = time.perf_counter()
            pieces[key].append(many_paths[key](part))
            totals[key] += time.perf_counter() - start
            many_rss[key] = peak_rss_mb()
    many_old = torch.cat(pieces["before"])
    many_now = torch.cat(pieces["now fp32"])
    many_before_s, many_now_s = totals["before"], totals["now fp32"]
    diff_many = float((many_now - many_old).abs().max())
    print(f"| {len(many)} labels | before (truncated batches) | {many_before_s:.2f} | {many_rss['before']:.0f} | - |")
    print(f"| {len(many)} labels | now fp32 | {many_now_s:.2f} | {many_rss['now fp32']:.0f} | {diff_many:.1e} |")
    bf16_s = totals.get("now bf16")
    if bf16_s is not None:
        cos = float(F.cosine_similarity(torch.cat(pieces["now bf16"]), many_old, dim=-1).min())
        print(f"| {len(many)} labels | now bf16 | {bf16_s:.2f} | {many_rss['now bf16']:.0f} | min cosine {cos:.4f} |")

    print()
    r5 = full_s / now_s
    print(f"5 labels, fp32: now {r5:.1f}x faster than full context (target >= 8.5x: {verdict(r5 >= 8.5)}); "
          f"before was {full_s / before_s:.1f}x; max |now - full| {diff5:.1e} (<= 1e-5: {verdict(diff5 <= 1e-5)})")
    rm = many_before_s / many_now_s
    print(f"{len(many)} labels, fp32: now {rm:.2f}x faster than before (target >= 1.5x: {verdict(rm >= 1.5)}); "
          f"max |now - before| {diff_many:.1e}")
    if bf16_s is not None:
        rb = many_before_s / bf16_s
        print(f"{len(many)} labels, bf16: {rb:.2f}x faster than before in fp32 (target >= 3x: {verdict(rb >= 3)})")
    else:
        print("bf16: encode_texts has no precision setting in this build: not measured")


if __name__ == "__main__":
    main()
