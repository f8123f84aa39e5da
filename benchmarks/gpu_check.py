"""Check the engine on a CUDA GPU: precision, agreement with fp32, speed, and no silent CPU fallback.

    python benchmarks/gpu_check.py [--device cuda:0] [--quick] [--benchmarks]

On a machine with CUDA it
1. resolves "auto" (bf16 where the GPU has it, else fp16) and checks the Explainer, the SAM
   refiner and the engine functions use it;
2. checks that nothing falls back to the CPU: the model's parameters, the tokens, text features,
   dense tokens, attention captures and SAM embeddings (and the SAM embedding cache) are on the
   GPU (the Explainer's own caches hold CPU float32 copies by design: they feed numpy figures);
3. runs the precision-agreement checks of tests/unit/test_precision.py on the GPU (tiny models:
   ViT label maps' Pearson >= 0.99 with fp32 and argmax agreement >= 98%; the tiny ResNet, with
   its BatchNorms calibrated as in the tests, Pearson >= 0.97 and >= 80% where fp32's labels are
   not near-ties; SAM mask IoU >= 0.95);
4. times fp32 against the reduced precision for ViT-B-16 and RN50 at 224 and 448 and SAM vit_b
   (random weights; skipped with --quick), and with --benchmarks runs every benchmarks/bench_*.py;
and prints one summary table. Without CUDA it says so and exits 0. Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
LABELS = ["person", "rocket", "flag", "sky", "helmet"]
CALIBRATION_IMAGES = ("astronaut", "cat", "coffee", "rocket")


# --- pieces that work without a GPU (tested in tests/unit/test_gpu_check.py) --------------------------

def select_device(requested: str | None = None) -> torch.device | None:
    """The CUDA device to check (``requested`` or cuda:0), or None when this machine has no CUDA."""
    if not torch.cuda.is_available():
        return None
    device = torch.device(requested or "cuda")
    if device.type != "cuda":
        raise SystemExit(f"--device {requested!r} is not a CUDA device; this script checks GPUs (e.g. cuda:0).")
    return device


def tensors_in(obj: Any, path: str = "result", seen: set[int] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor inside ``obj``: tensors, modules (parameters and buffers),
    mappings, sequences and the fields of dataclasses or plain objects."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, torch.nn.Module):
        for name, tensor in list(obj.named_parameters()) + list(obj.named_buffers()):
            yield f"{path}.{name}", tensor
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors_in(value, f"{path}[{key!r}]", seen)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from tensors_in(value, f"{path}[{i}]", seen)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__dataclass_fields__"):
        fields = getattr(obj, "__dataclass_fields__", None) or vars(obj)
        for name in fields:
            yield from tensors_in(getattr(obj, name, None), f"{path}.{name}", seen)


def off_device(obj: Any, device: torch.device, path: str = "result") -> list[str]:
    """Paths of the tensors in ``obj`` that are not on ``device``'s type (e.g. fell back to the CPU)."""
    return [f"{p} on {t.device}" for p, t in tensors_in(obj, path) if t.device.type != device.type]


def wrong_dtype(obj: Any, dtype: torch.dtype = torch.float32, path: str = "result") -> list[str]:
    """Paths of the floating tensors in ``obj`` whose dtype is not ``dtype`` (results are float32 in every precision)."""
    return [f"{p} is {t.dtype}" for p, t in tensors_in(obj, path) if t.is_floating_point() and t.dtype != dtype]


def pearson_min(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest correlation between matching label maps: a, b [N, T] (or [T, H, W] with axis 0 labels)."""
    a2 = a.reshape(a.shape[0], -1) if a.ndim == 3 else a.T
    b2 = b.reshape(b.shape[0], -1) if b.ndim == 3 else b.T
    return float(min(np.corrcoef(x, y)[0, 1] for x, y in zip(a2, b2)))


def decided_pixels(fp32_maps: np.ndarray, share: float = 0.02) -> np.ndarray:
    """Pixels whose two best fp32 labels differ by more than ``share`` of the maps' range: [T, H, W] -> [H, W]."""
    top2 = np.sort(fp32_maps, axis=0)[-2:]
    return (top2[1] - top2[0]) > share * (fp32_maps.max() - fp32_maps.min())


class Summary:
    """Rows of (check, status, detail); ``failed`` once any check failed."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, check: str, ok: bool | None, detail: str = "") -> None:
        self.rows.append((check, "ok" if ok else ("FAIL" if ok is False else "info"), detail))

    def run(self, check: str, fn: Callable[[], tuple[bool | None, str]]) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
            ok, detail = False, f"{type(exc).__name__}: {str(exc)[:200]}"
        self.add(check, ok, detail)

    @property
    def failed(self) -> bool:
        return any(status == "FAIL" for _, status, _ in self.rows)

    def table(self) -> str:
        width = max([len(r[0]) for r in self.rows] + [5])
        lines = [f"{'check'.ljust(width)} | status | detail", f"{'-' * width} | ------ | ------"]
        lines += [f"{c.ljust(width)} | {s.ljust(6)} | {d}" for c, s, d in self.rows]
        return "\n".join(lines)


# --- the checks on the GPU ------------------------------------------------------------------------

def _timed(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def check_engine(summary: Summary, device: torch.device) -> None:
    from clipsurgery_widgets.engine import (Explainer, capture_attention, encode_dense, encode_image_tokens,
                                            encode_texts, load_model, preprocess, sample_image, segment)
    from clipsurgery_widgets.engine.batchnorm import calibrate_batch_norms

    rgb = sample_image("astronaut")
    for name in ("tiny-random-vit", "tiny-random-resnet"):
        model = load_model(name, device=device)
        resnet = name.endswith("resnet")
        if resnet:  # open_clip's init makes every patch token point one way: see engine/batchnorm.py
            calibrate_batch_norms(model.model.visual, [preprocess(sample_image(s), size, model.mean, model.std, 32)
                                                       .to(device) for s in CALIBRATION_IMAGES for size in (224, 448)])
        explainer = Explainer(model, cache_dir=False)
        reduced = explainer.resolved_precision()
        summary.add(f"{name}: auto precision", reduced.reduced, f"auto -> {reduced.name} on {device}")
        summary.add(f"{name}: model on the GPU", not off_device(model.model, device, "model"),
                    "; ".join(off_device(model.model, device, "model")[:3]))
        pixels = preprocess(rgb, 224, model.mean, model.std, model.patch_size).to(device)
        results = {"tokens": encode_image_tokens(model.model, pixels, precision="auto"),
                   "texts": encode_texts(model, None, LABELS, precision="auto"),
                   "attention": capture_attention(model.model, pixels, precision="auto")}
        if name.endswith("vit"):
            results["dense"] = encode_dense(model.model, pixels, "sclip", precision="auto")
        for what, result in results.items():
            # capture_attention hands its q, k, v to the CPU on purpose (the attention views read them).
            bad = [] if what == "attention" else off_device(result, device, what)
            summary.add(f"{name}: {what} on the GPU, float32", not bad and not wrong_dtype(result),
                        "; ".join((bad + wrong_dtype(result))[:3]))
        a = explainer.explain(rgb, LABELS, precision="fp32").mapset()
        b = explainer.explain(rgb, LABELS).mapset()  # auto: the reduced precision
        same = a.maps.argmax(0) == b.maps.argmax(0)
        agree = float(same.mean())
        decided = float(same[decided_pixels(a.maps)].mean())
        r = pearson_min(a.patch_scores, b.patch_scores)
        ok = r >= 0.97 and decided >= 0.8 if resnet else r >= 0.99 and agree >= 0.98
        summary.add(f"{name}: maps {reduced.name} vs fp32", ok,
                    f"Pearson min {r:.4f}, argmax agreement {100 * agree:.1f}% ({100 * decided:.1f}% where "
                    f"fp32's labels are not near-ties)")
        if name.endswith("vit"):
            s32 = segment(model, rgb, LABELS, precision="fp32")
            s16 = segment(model, rgb, LABELS, precision="auto")
            share = float((s32.labels == s16.labels).float().mean())
            summary.add(f"{name}: segment {reduced.name} vs fp32", share >= 0.98, f"{100 * share:.1f}% of pixels")


def check_sam(summary: Summary, device: torch.device) -> None:
    from clipsurgery_widgets.engine import SamRefiner, build_tiny_sam, sample_image

    rgb = sample_image("astronaut")
    refiner = SamRefiner(build_tiny_sam().to(device), precision="auto")
    points = np.array([[250.0, 150.0], [300.0, 300.0], [100.0, 400.0]])
    masks = {}
    for precision in ("fp32", None):
        refiner.set_image(rgb, precision=precision)
        masks[precision] = refiner.predict(points=points).masks
        bad = off_device(refiner.predictor.features, device, "embedding") + \
            off_device(refiner.embeddings._memory, device, "embedding cache")
        summary.add(f"tiny SAM ({precision or 'auto'}): embedding and cache on the GPU", not bad, "; ".join(bad[:3]))
    iou = min((m1 & m2).sum() / max((m1 | m2).sum(), 1) for m1, m2 in zip(masks["fp32"], masks[None]))
    summary.add("tiny SAM: masks auto vs fp32", iou >= 0.95, f"IoU min {iou:.3f}")


def check_speed(summary: Summary, device: torch.device) -> None:
    import open_clip
    from segment_anything import SamPredictor, sam_model_registry

    from clipsurgery_widgets.engine import encode_image_tokens, preprocess, sample_image
    from clipsurgery_widgets.engine.precision import resolve_precision
    from clipsurgery_widgets.engine.sam.embeddings import compute_embedding

    reduced = resolve_precision("auto", device)
    rgb = sample_image("astronaut")
    for name in ("ViT-B-16", "RN50"):
        model = open_clip.create_model(name, pretrained=None).to(device).eval()
        for size in (224, 448):
            pixels = preprocess(rgb, size, (0.481, 0.458, 0.408), (0.269, 0.261, 0.276),
                                32 if name == "RN50" else 16).to(device)
            t32 = _timed(lambda: encode_image_tokens(model, pixels, precision="fp32"), device)
            tlow = _timed(lambda: encode_image_tokens(model, pixels, precision=reduced), device)
            summary.add(f"{name} {size} tokens {reduced}/fp32", tlow <= 0.6 * t32,
                        f"{1000 * tlow:.1f} / {1000 * t32:.1f} ms = {tlow / t32:.2f}x (target <= 0.6x)")
    sam = sam_model_registry["vit_b"](checkpoint=None).to(device).eval()
    transform = SamPredictor(sam).transform
    t32 = _timed(lambda: compute_embedding(sam, transform, rgb, lambda f, m: None, "fp32"), device, 3)
    tlow = _timed(lambda: compute_embedding(sam, transform, rgb, lambda f, m: None, reduced), device, 3)
    summary.add(f"SAM vit_b embedding {reduced}/fp32", tlow <= 0.5 * t32,
                f"{1000 * tlow:.0f} / {1000 * t32:.0f} ms = {tlow / t32:.2f}x (target <= 0.5x)")
    summary.add("peak GPU memory", None, f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB")


def run_benchmark_scripts(summary: Summary) -> None:
    for script in sorted(HERE.glob("bench_*.py")):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        print(f"===== {script.name}\n{done.stdout}{done.stderr[-2000:] if done.returncode else ''}")
        summary.add(f"benchmarks/{script.name}", done.returncode == 0,
                    f"exit {done.returncode} in {time.perf_counter() - start:.0f} s (output above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="CUDA device to check (default cuda)")
    parser.add_argument("--quick", action="store_true", help="skip the timings of the full-size models")
    parser.add_argument("--benchmarks", action="store_true", help="also run every benchmarks/bench_*.py")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    if device is None:
        print("No CUDA device on this machine: nothing to check on a GPU. Run this script on a machine with an "
              "NVIDIA GPU and a CUDA build of torch (the CPU paths are covered by the unit tests).")
        return 0
    summary = Summary()
    summary.add("device", True, f"{torch.cuda.get_device_name(device)}, bf16: {torch.cuda.is_bf16_supported()}")
    summary.run("engine checks", lambda: (check_engine(summary, device), (True, "see the rows above"))[1])
    summary.run("SAM checks", lambda: (check_sam(summary, device), (True, "see the rows above"))[1])
    if not args.quick:
        summary.run("timings", lambda: (check_speed(summary, device), (True, "see the rows above"))[1])
    if args.benchmarks:
        run_benchmark_scripts(summary)
    print(summary.table())
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
