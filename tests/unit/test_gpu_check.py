"""benchmarks/gpu_check.py: what can be checked without a GPU (device choice, dtypes, fallback
detection, cache keys per precision) and its exit without CUDA."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
import torch

from clipsurgery_widgets.engine.precision import Precision, resolve_precision
from clipsurgery_widgets.engine.sam.embeddings import embedding_key

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    return load_script(SCRIPT, "gpu_check")


def test_without_cuda_it_says_so_and_exits_0(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.select_device() is None
    assert gpu_check.main([]) == 0
    assert "No CUDA device" in capsys.readouterr().out


def test_device_selection_refuses_a_cpu_device(gpu_check, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_check.select_device() == torch.device("cuda")
    assert gpu_check.select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(SystemExit, match="not a CUDA device"):
        gpu_check.select_device("cpu")


def test_auto_picks_bf16_or_fp16_on_cuda_and_fp32_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", "cuda:0") == "fp16" and resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ValueError, match="no bf16 support"):
        resolve_precision("bf16", "cuda")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert Precision("fp16", "cuda").dtype == torch.float16 and Precision("bf16", "cuda").dtype == torch.bfloat16


@dataclass
class _Result:
    tokens: torch.Tensor
    extra: dict


def test_fallback_and_dtype_detection_find_every_misplaced_tensor(gpu_check):
    meta = torch.device("meta")  # stands for the GPU: a device that is not the CPU
    result = _Result(tokens=torch.empty(2, 3, device=meta),
                     extra={"grid": (2, 2), "cache": [torch.zeros(2), torch.empty(1, device=meta, dtype=torch.bfloat16)],
                            "array": np.zeros(3)})
    assert gpu_check.off_device(result, meta) == ["result.extra['cache'][0] on cpu"]
    assert gpu_check.wrong_dtype(result) == ["result.extra['cache'][1] is torch.bfloat16"]
    module = torch.nn.Linear(2, 2)
    assert len(gpu_check.off_device(module, meta, "model")) == 2  # weight and bias
    assert gpu_check.off_device(module, torch.device("cpu"), "model") == []


def test_summary_marks_failures_and_keeps_going(gpu_check):
    summary = gpu_check.Summary()
    summary.add("a", True, "fine")
    summary.run("b", lambda: 1 / 0)
    summary.add("c", None, "note")
    assert summary.failed
    table = summary.table()
    assert "ZeroDivisionError" in table and "| info" in table and "| FAIL" in table


def test_pearson_min_is_per_label(gpu_check):
    a = np.random.default_rng(0).normal(size=(50, 3))
    b = a.copy()
    b[:, 2] = -b[:, 2]
    assert gpu_check.pearson_min(a, a) == pytest.approx(1.0)
    assert gpu_check.pearson_min(a, b) == pytest.approx(-1.0)


def test_cache_keys_differ_per_precision_and_fp32_keys_are_unchanged():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    keys = {p: embedding_key("fp", rgb, 1024, p) for p in ("fp32", "bf16", "fp16")}
    assert len(set(keys.values())) == 3
    assert keys["fp32"] == embedding_key("fp", rgb, 1024)
    assert Precision("fp32", "cuda").cache_tag == () and Precision("bf16", "cuda").cache_tag == ("bf16",)


def test_the_engine_checks_pass_on_the_cpu_with_auto_as_bf16(gpu_check, monkeypatch):
    """check_engine as it runs on a GPU, with the CPU standing in and "auto" resolving to bf16
    (the boundary: the CUDA device itself, its fp16 and its timings are not exercised here)."""
    from clipsurgery_widgets.engine import precision

    real = precision.resolve_precision
    monkeypatch.setattr(precision, "resolve_precision",
                        lambda name, where="cpu": "bf16" if name == "auto" else real(name, where))
    summary = gpu_check.Summary()
    gpu_check.check_engine(summary, torch.device("cpu"))
    rows = {check: (status, detail) for check, status, detail in summary.rows}
    assert rows["tiny-random-resnet: maps bf16 vs fp32"][0] == "ok"
    assert rows["tiny-random-vit: maps bf16 vs fp32"][0] == "ok"
    assert not summary.failed, summary.table()
