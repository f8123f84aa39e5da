"""The runner: outputs, resume after Ctrl-C, refusal to mix settings, limit, errors before the model, CLI."""
from __future__ import annotations

import csv
import json
import pickle
import sys
import types

import pytest
from eval_fixtures import FAST_TEMPLATES, write_dataset

from clipsurgery_widgets.cli import build_parser, main
from clipsurgery_widgets.cli.evaluate import task_settings
from clipsurgery_widgets.evaluation import (
    DatasetLayoutError,
    ResumeMismatchError,
    evaluate,
)
from clipsurgery_widgets.evaluation.tasks.seg import SegTask
from clipsurgery_widgets.evaluation.workers import ModelSpec, TaskFactory

FAST = {"templates": FAST_TEMPLATES, "short_side": 32, "crop": 0}


def _run(root, out, model, **options):
    return evaluate("seg", "voc21", root, methods="raw,sclip", model=model, out=out,
                    progress=options.pop("progress", False), **{**FAST, **options})


@pytest.fixture
def voc(tmp_path):
    return write_dataset("voc21", tmp_path / "data", n=4)


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(self):
        raise AssertionError("the model must not be loaded")
    monkeypatch.setattr(ModelSpec, "load", refuse)


def test_outputs(tmp_path, voc, tiny_vit):
    result = _run(voc, tmp_path / "out", tiny_vit)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["task"] == "seg" and saved["dataset"] == "voc21" and set(saved["methods"]) == {"raw", "sclip"}
    for numbers in saved["methods"].values():
        assert 0 <= numbers["miou"] <= 1 and 0 <= numbers["pixel_accuracy"] <= 1 and numbers["images"] == 4
        assert len(numbers["per_class_iou"]) == 21
    assert saved["model"]["fingerprint"] == tiny_vit.fingerprint and saved["items"]["skipped"] == 0
    rows = list(csv.reader((tmp_path / "out" / "per_class.csv").open()))
    assert rows[0] == ["class_index", "class_name", "raw", "sclip"] and len(rows) == 22 and rows[1][1] == "background"
    report = (tmp_path / "out" / "report.md").read_text()
    measured = f"{100 * result.methods['sclip']['miou']:.2f}"
    assert f"| sclip | mIoU | {measured} | 59.63 |" in report and "| raw |" in report
    assert len(list((tmp_path / "out" / "items").glob("*.npz"))) == 4


def test_interrupted_run_resumes_to_identical_numbers(tmp_path, voc, tiny_vit):
    spec_model = tiny_vit
    reference = _run(voc, tmp_path / "full", spec_model)

    def stop_after_two(done, total, item_id):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(voc, tmp_path / "out", spec_model, progress=stop_after_two)
    items = tmp_path / "out" / "items"
    assert len(list(items.glob("*.npz"))) == 2 and not list(items.glob(".tmp-*"))
    assert not (tmp_path / "out" / "results.json").exists()
    resumed = _run(voc, tmp_path / "out", spec_model)
    assert resumed.timings["items_computed"] == 2
    assert resumed.methods == reference.methods


def test_interrupt_inside_run_item_and_rerun_when_complete_returns_at_once(tmp_path, voc, tiny_vit, monkeypatch):
    original, calls = SegTask.run_item, []

    def flaky(self, item_id):
        calls.append(item_id)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, item_id)

    monkeypatch.setattr(SegTask, "run_item", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(voc, tmp_path / "out", tiny_vit)
    assert len(list((tmp_path / "out" / "items").glob("*.npz"))) == 3
    monkeypatch.setattr(SegTask, "run_item", original)
    resumed = _run(voc, tmp_path / "out", tiny_vit)
    assert resumed.timings["items_computed"] == 1
    assert resumed.methods == _run(voc, tmp_path / "full", tiny_vit).methods

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be computed when the run is complete")

    monkeypatch.setattr(SegTask, "prepare", refuse)
    monkeypatch.setattr(SegTask, "run_item", refuse)
    again = evaluate("seg", "voc21", voc, methods="raw,sclip", model="tiny-random-vit", out=tmp_path / "out",
                     progress=False, **FAST)  # by name: not loaded, since nothing remains
    assert again.timings["items_computed"] == 0 and again.timings["model_seconds"] == 0
    assert again.methods == resumed.methods


def test_resume_with_other_settings_is_refused(tmp_path, voc, tiny_vit):
    _run(voc, tmp_path / "out", tiny_vit, limit=1)
    with pytest.raises(ResumeMismatchError, match=r"crop 0 -> 16.*another --out"):
        _run(voc, tmp_path / "out", tiny_vit, crop=16, stride=16, limit=1)
    with pytest.raises(ResumeMismatchError, match="methods"):
        evaluate("seg", "voc21", voc, methods="raw", model=tiny_vit, out=tmp_path / "out", progress=False, **FAST)
    with pytest.raises(ResumeMismatchError, match="model"):
        _run(voc, tmp_path / "out", "ViT-B-16", limit=1)


def test_limit_takes_the_first_items_and_a_full_rerun_adds_the_rest(tmp_path, voc, tiny_vit):
    first = _run(voc, tmp_path / "out", tiny_vit, limit=2)
    assert first.items == 2 and sorted(i.name for i in (tmp_path / "out" / "items").iterdir()) == \
        ["2007_000000.npz", "2007_000001.npz"]
    full = _run(voc, tmp_path / "out", tiny_vit)
    assert full.items == 4 and full.timings["items_computed"] == 2


def test_without_out_nothing_is_written_and_item_scores_are_available(tmp_path, voc, tiny_vit):
    result = evaluate("seg", "voc21", voc, methods="sclip", model=tiny_vit, progress=False, **FAST)
    assert result.out is None and not (tmp_path / "results").exists()
    scores = result.item_scores("sclip")
    assert list(scores) == ["2007_000000", "2007_000001", "2007_000002", "2007_000003"]
    assert all(0 <= v <= 1 for v in scores.values())
    assert "| sclip |" in result.to_markdown()


def test_layout_error_comes_before_the_model(tmp_path, voc, no_model_loading):
    (voc / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="val.txt"):
        evaluate("seg", "voc21", voc, model="no-such-model", out=tmp_path / "out", progress=False)


def test_cli_layout_error_is_one_line_and_exit_1(tmp_path, capsys, no_model_loading):
    code = main(["evaluate", "--dataset", "voc20", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "voc20" in err and "does not exist" in err


def test_cli_end_to_end_on_the_tiny_model(tmp_path, capsys):
    root = write_dataset("generic", tmp_path / "data", n=2)
    out = tmp_path / "out"
    args = ["evaluate", "--dataset", "generic", "--root", str(root), "--method", "raw,naclip", "--model",
            "tiny-random-vit", "--out", str(out), "--short-side", "32", "--crop", "0", "--pamr", "0",
            "--area-thd", "none", "--set", f"templates={FAST_TEMPLATES[0]}", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| raw |" in printed and "| naclip |" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"]["naclip"]["settings"]["pamr_steps"] == 0 and saved["class_names"][2] == "dog"
    assert main(args) == 0  # complete: resumes with nothing to do


def test_cli_settings_only_given_options_and_area_none():
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--dataset", "voc21", "--root", "x", "--area-thd", "none", "--pamr", "3",
                              "--prob-thd", "0.2", "--set", "feature_surgery=true", "--set", "depth=4"])
    assert task_settings(args) == {"area_thd": None, "pamr_steps": 3, "prob_thd": 0.2, "feature_surgery": True,
                                   "depth": 4}
    plain = parser.parse_args(["evaluate", "--dataset", "voc21", "--root", "x"])
    assert task_settings(plain) == {}


def test_ray_engine_path_uses_a_picklable_task_factory(tmp_path, voc, tiny_vit, monkeypatch):
    """The runner's side of --engine ray, with a stand-in run_items that runs the factory here."""
    seen = {}

    def run_items(task_factory, items, num_workers):
        seen["factory"] = pickle.loads(pickle.dumps(task_factory))
        task = seen["factory"]()
        from clipsurgery_widgets.evaluation.tasks import attempt_item
        return [(item, attempt_item(task, item)) for item in items]

    stub = types.SimpleNamespace(run_items=run_items)
    monkeypatch.setitem(sys.modules, "clipsurgery_widgets.evaluation.ray_engine", stub)
    # `from . import ray_engine` reads the package attribute first when another test imported the real one
    import clipsurgery_widgets.evaluation as evaluation_package
    monkeypatch.setattr(evaluation_package, "ray_engine", stub, raising=False)
    ray_result = _run(voc, tmp_path / "ray", tiny_vit, engine="ray")
    assert isinstance(seen["factory"], TaskFactory) and seen["factory"].model.loaded is not None
    assert seen["factory"].model.name == "tiny-random-vit"
    assert ray_result.methods == _run(voc, tmp_path / "local", tiny_vit).methods


def test_cli_task_flags_reach_the_task_settings():
    from clipsurgery_widgets.cli import build_parser
    from clipsurgery_widgets.cli.evaluate import task_settings

    args = build_parser().parse_args(["evaluate", "--task", "imagenet_seg", "--root", "x.mat", "--labels", "l.txt",
                                      "--at-original-size", "--feature-surgery", "off", "--area-thd", "none"])
    assert args.method is None  # each task keeps its own default methods
    assert task_settings(args) == {"labels": "l.txt", "at_original_size": True, "feature_surgery": False,
                                   "area_thd": None}
    args = build_parser().parse_args(["evaluate", "--task", "explain", "--dataset", "voc21", "--root", "r",
                                      "--no-skip-background", "--max-per-class", "3"])
    assert task_settings(args) == {"skip_background": False, "max_per_class": 3}
