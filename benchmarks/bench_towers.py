"""Cost of raw + CLIP Surgery tokens in one pass versus plain model.encode_image.

Real-size architectures with random weights (no download), CPU, batch 1, fp32. Paths are timed back to
back in each repeat, rotating which goes first; the headline ratios are medians of per-repeat ratios
after warm-up, which shrug off the machine's load drifting between repeats. Peak RSS is printed beside
each row (the process's high-water mark after that row ran).

Targets (docs/algorithms.md#architecture-surgery-vit; issue "Fast paths"):
  - ViT at 224: encode_image_tokens <= 0.9x open_clip's own encode_image (surgery for free);
  - ViT at 448: no slower than the previous implementation ("before": open_clip's block modules for the
    ordinary blocks, q/k/v concatenated for one attention call in the surgery blocks), reproduced here;
  - every model: <= 1.15x encode_image.

    python benchmarks/bench_towers.py [--repeats 15] [--models ViT-B-16 RN50] [--sizes 224 448] [--threads 1]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.towers.encode import encode_image_tokens
from clipsurgery_widgets.engine.towers.ops import merge_heads, split_heads_qkv
from clipsurgery_widgets.engine.towers.vit import vit_embed

TARGET_ANY, TARGET_VIT_224, TARGET_VS_BEFORE = 1.15, 0.9, 1.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def before_vit_tokens(visual, pixels, depth):
    """The implementation this benchmark replaced, kept as the 'no slower than before' reference."""
    z, _ = vit_embed(visual, pixels)
    blocks = visual.transformer.resblocks
    for block in blocks[: len(blocks) - depth]:
        z = block(z)
    y = z
    for block in blocks[len(blocks) - depth:]:
        attn, b = block.attn, z.shape[0]
        q, k, v = split_heads_qkv(attn, block.ln_1(z))
        mixed = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
        out = block.ls_1(F.linear(merge_heads(mixed), attn.out_proj.weight, attn.out_proj.bias))
        z = z + out[:b]
        z = z + block.ls_2(block.mlp(block.ln_2(z)))
        y = y + out[b:]
    raw = visual.ln_post(z) @ visual.proj
    return raw, torch.cat([raw[:, :1], visual.ln_post(y[:, 1:]) @ visual.proj], dim=1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(model, name: str, size: int, repeats: int, warmup: int, depth: int) -> dict:
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))

    def plain():
        with torch.no_grad():
            return model.encode_image(pixels)

    def surgery():
        return encode_image_tokens(model, pixels, depth=depth)

    native = model.visual.image_size
    native = native[0] if isinstance(native, (tuple, list)) else native
    paths = {"surgery": surgery}
    if size == native:  # encode_image cannot run at other sizes (its positional table is not resized)
        paths["plain"] = plain
    is_vit = hasattr(model.visual, "transformer")
    if is_vit:
        paths["before"] = lambda: before_vit_tokens(model.visual, pixels, depth)
    drift = (surgery().raw[:, 0] - plain()).abs().max().item() if "plain" in paths else float("nan")
    for _ in range(warmup):
        for fn in paths.values():
            fn()
    times = {key: [] for key in paths}
    order = list(paths)
    for i in range(repeats):  # rotate the order so no path always runs first
        for key in order[i % len(order):] + order[: i % len(order)]:
            times[key].append(timed(paths[key]))
    row = {"model": name, "size": size, "drift": drift, "rss": peak_rss_mb(),
           **{key: statistics.median(v) for key, v in times.items()}}
    if "plain" in paths:
        row["vs_plain"] = statistics.median(s / p for s, p in zip(times["surgery"], times["plain"]))
    if is_vit:
        row["vs_before"] = statistics.median(s / b for s, b in zip(times["surgery"], times["before"]))
    return row


def verdicts(row: dict) -> str:
    out = []
    vit = "vs_before" in row
    if "vs_plain" in row:
        target = TARGET_VIT_224 if vit else TARGET_ANY
        out.append(f"<= {target}x encode_image: {'PASS' if row['vs_plain'] <= target else 'MISS'}")
    if vit and "vs_plain" not in row:
        out.append(f"<= {TARGET_VS_BEFORE}x before: {'PASS' if row['vs_before'] <= TARGET_VS_BEFORE else 'MISS'}")
    return "; ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-16", "RN50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 448])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, fp32, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print("| model | size | encode_image ms | raw+surgery ms | before ms | surgery/encode_image | surgery/before "
          "| peak RSS MB | abs(tok0 - encode_image) | verdict |")
    print("| --- " * 10 + "|")
    for name in args.models:
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None).eval()
        for size in args.sizes:
            r = bench(model, name, size, args.repeats, args.warmup, args.depth)
            before = f"{r['before'] * 1e3:.1f}" if "before" in r else "-"
            vs_before = f"{r['vs_before']:.3f}x" if "vs_before" in r else "-"
            plain = f"{r['plain'] * 1e3:.1f}" if "plain" in r else "-"
            vs_plain = f"{r['vs_plain']:.3f}x" if "vs_plain" in r else "-"
            print(f"| {name} | {size} | {plain} | {r['surgery'] * 1e3:.1f} | {before} | "
                  f"{vs_plain} | {vs_before} | {r['rss']:.0f} | {r['drift']:.2e} | {verdicts(r)} |", flush=True)
    print("Ratios are medians over repeats of per-repeat ratios (paths timed back to back); encode_image runs "
          "only at the native size (open_clip does not resize its positional table).")


if __name__ == "__main__":
    main()
