"""bf16 versus fp32: time ratios, map agreement and peak memory, measured in one run (random weights).

    python benchmarks/bench_precision.py [--repeats 5] [--device cpu] [--cases vit224,vit448,rn224,rn448,rn224-init,rn448-init,sam]

Cases (each in its own process, so that its peak RSS is its own):
- vit224 / vit448 / rn224 / rn448: ViT-B-16 or RN50, raw + surgery tokens of one image
  (``encode_image_tokens``) in fp32 and bf16; targets: bf16 <= 0.6x fp32 at 224 and 448.
  Agreement of the label maps (5 labels): the smallest Pearson correlation of a label's patch
  scores with fp32's (target >= 0.99), the share of pixels whose argmax label is the same (target
  >= 98%), and that share among "decided" pixels, where fp32's top two labels differ by more than
  2% of the map's range (random weights give near-ties that any rounding flips).
  RN50 is measured twice: as open_clip initialises it ("rn..-init": every patch token points one
  way to about 1e-6, so its maps are flat and the agreement is rounding noise), and with trained-
  like BatchNorms ("rn..", engine.batchnorm.calibrate_batch_norms on the sample images), where the
  maps have structure. Time ratios are measured on the calibrated tower.
  For scale, each tower case also runs fp32 on the input pixels rounded to bf16 (the first
  rounding a bf16 pass makes) and reports how far that alone moves the maps and tokens: a tower
  that amplifies this tiny change amplifies every rounding of a bf16 pass the same way.
- sam: Segment Anything vit_b (random weights, no checkpoint) image embedding at 1024, fp32 versus
  bf16 (target <= 0.5x), and the IoU of the masks SAM predicts from three points with each.

Prints one table; each row gives the peak RSS of its process.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {"vit224": ("ViT-B-16", 224), "vit448": ("ViT-B-16", 448), "rn224": ("RN50", 224), "rn448": ("RN50", 448),
         "rn224-init": ("RN50", 224), "rn448-init": ("RN50", 448)}
SAMPLES = ("astronaut", "cat", "coffee", "rocket")
LABELS = ["a person", "a rocket", "a flag", "the sky", "a helmet"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (autocast caches, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_tower_case(name: str, size: int, repeats: int, device: str, calibrate: bool) -> dict:
    import numpy as np
    import open_clip
    import torch
    import torch.nn.functional as F

    from clipsurgery_widgets.engine import encode_image_tokens, encode_texts, preprocess, sample_image
    from clipsurgery_widgets.engine.surgery import feature_surgery

    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).to(device).eval()
    tokenizer = open_clip.get_tokenizer(name)
    patch = 32 if name.startswith("RN") else 16
    mean, std = (0.481, 0.458, 0.408), (0.269, 0.261, 0.276)
    if calibrate:
        from clipsurgery_widgets.engine.batchnorm import calibrate_batch_norms
        calibrate_batch_norms(model.visual, [preprocess(sample_image(s), size, mean, std, patch).to(device)
                                             for s in SAMPLES])
    rgb = sample_image("astronaut")
    pixels = preprocess(rgb, size, mean, std, patch).to(device)
    out: dict = {"case": f"{name} {size}" + ("" if calibrate or not name.startswith("RN") else " (open_clip init)")}
    tokens = {}
    for precision in ("fp32", "bf16"):
        out[f"{precision}_s"] = _median_time(lambda: encode_image_tokens(model, pixels, precision=precision), repeats)
        tokens[precision] = encode_image_tokens(model, pixels, precision=precision)
    out["ratio"] = out["bf16_s"] / out["fp32_s"]
    # The model's own sensitivity, for scale: fp32 on the pixels rounded to bf16 (the first rounding a
    # bf16 pass makes). A tower that moves its maps this much from that alone amplifies any rounding.
    tokens["fp32, bf16 pixels"] = encode_image_tokens(model, pixels.to(torch.bfloat16).float(), precision="fp32")
    text = encode_texts(model, tokenizer, LABELS, templates=["a photo of {}."])  # fp32 for both: image side compared
    maps = {}
    for precision, t in tokens.items():
        scores = feature_surgery(F.normalize(t.surgery.float(), dim=-1), text, mode="labels")[0, 1:]  # [N, T]
        grid = t.grid
        maps[precision] = F.interpolate(scores.T.reshape(1, len(LABELS), *grid), size=(size, size), mode="bilinear",
                                        align_corners=False)[0].cpu().numpy()

    def pearson_min(a, b) -> float:
        return float(min(np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(len(LABELS))))

    def relative_error(t) -> float:
        return float((t.surgery - tokens["fp32"].surgery).norm() / tokens["fp32"].surgery.norm())

    a, b = maps["fp32"], maps["bf16"]
    out["pearson_min"] = pearson_min(a, b)
    out["pixels_pearson_min"] = pearson_min(a, maps["fp32, bf16 pixels"])
    out["token_error"] = relative_error(tokens["bf16"])
    out["pixels_token_error"] = relative_error(tokens["fp32, bf16 pixels"])
    same = a.argmax(0) == b.argmax(0)
    top2 = np.sort(a, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > 0.02 * (a.max() - a.min())
    out["argmax_agree"] = float(same.mean())
    out["decided_share"] = float(decided.mean())
    out["decided_agree"] = float(same[decided].mean()) if decided.any() else float("nan")
    out["token_cosine_min"] = float(F.cosine_similarity(tokens["fp32"].surgery, tokens["bf16"].surgery, dim=-1).min())
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def run_sam_case(repeats: int, device: str) -> dict:
    import numpy as np
    import torch
    from segment_anything import SamPredictor, sam_model_registry

    from clipsurgery_widgets.engine import sample_image
    from clipsurgery_widgets.engine.sam.embeddings import compute_embedding, install_embedding

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"](checkpoint=None).to(device).eval()
    predictor = SamPredictor(sam)
    rgb = sample_image("astronaut")
    out: dict = {"case": "SAM vit_b 1024"}
    embeddings = {}
    for precision in ("fp32", "bf16"):
        def once(precision=precision):
            return compute_embedding(sam, predictor.transform, rgb, lambda f, m: None, precision)
        out[f"{precision}_s"] = _median_time(once, repeats)
        embeddings[precision] = once()
    out["ratio"] = out["bf16_s"] / out["fp32_s"]
    points = np.array([[250, 150], [300, 300], [100, 400]], dtype=np.float32)
    masks = {}
    for precision, embedding in embeddings.items():
        install_embedding(predictor, embedding)
        found, scores, _ = predictor.predict(point_coords=points, point_labels=np.ones(3, dtype=np.int64),
                                             multimask_output=True)
        masks[precision] = found
    ious = [(m1 & m2).sum() / max((m1 | m2).sum(), 1) for m1, m2 in zip(masks["fp32"], masks["bf16"])]
    out["mask_iou_min"] = float(min(ious))
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _one(case: str, repeats: int, device: str) -> dict:
    if case == "sam":
        return run_sam_case(repeats, device)
    name, size = CASES[case]
    return run_tower_case(name, size, repeats, device, calibrate=name.startswith("RN") and not case.endswith("-init"))


def _table(rows: list[dict]) -> str:
    head = ("case", "fp32 s", "bf16 s", "bf16/fp32", "target", "agreement", "peak RSS MB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']} | failed: {r['error']} | | | | |")
            continue
        sam = r["case"].startswith("SAM")
        target = 0.5 if sam else 0.6
        verdict = "met" if r["ratio"] <= target else "MISSED"
        agreement = (f"mask IoU min {r['mask_iou_min']:.3f}" if sam else
                     f"Pearson min {r['pearson_min']:.4f}, argmax {100 * r['argmax_agree']:.1f}% "
                     f"(decided {100 * r['decided_agree']:.1f}% of {100 * r['decided_share']:.0f}%), "
                     f"token cos min {r['token_cosine_min']:.4f}, token error {100 * r['token_error']:.2f}% "
                     f"[fp32 on bf16-rounded pixels: Pearson min {r['pixels_pearson_min']:.4f}, "
                     f"token error {100 * r['pixels_token_error']:.2f}%]")
        lines.append(f"{r['case']} | {r['fp32_s']:.3f} | {r['bf16_s']:.3f} | {r['ratio']:.2f}x | "
                     f"<= {target}x {verdict} | {agreement} | {r['peak_rss_mb']:.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sam-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default="vit224,vit448,rn224,rn448,rn224-init,rn448-init,sam")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.one:
        repeats = args.sam_repeats if args.one == "sam" else args.repeats
        print("RESULT " + json.dumps(_one(args.one, repeats, args.device)))
        return
    rows = []
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--one", case, "--repeats", str(args.repeats),
                   "--sam-repeats", str(args.sam_repeats), "--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True)
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        row = json.loads(found[-1][7:]) if found else {"case": case, "error": done.stderr.strip()[-300:]}
        rows.append(row)
        print(f"done: {row['case']}", file=sys.stderr, flush=True)
    print(_table(rows))


if __name__ == "__main__":
    main()
