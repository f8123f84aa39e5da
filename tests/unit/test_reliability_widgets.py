"""Widget reliability (issue 16): a refused input keeps its error and makes older pending results stale
(item 6), and every user string reaches plotly as literal text (item 10)."""
from __future__ import annotations

import html
import json
import threading

import numpy as np
import plotly.io as pio
import pytest

from clipsurgery_widgets.engine.sam.refiner import SamRefiner
from clipsurgery_widgets.widgets import sam as sam_module
from clipsurgery_widgets.widgets import tokens as tokens_module
from clipsurgery_widgets.widgets.attention import AttentionExplorer
from clipsurgery_widgets.widgets.base import ExplorerWidget
from clipsurgery_widgets.widgets.decomposition import DecompositionExplorer
from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer
from clipsurgery_widgets.widgets.plotting import plotly_text
from clipsurgery_widgets.widgets.sam import SamWidget
from clipsurgery_widgets.widgets.tokens import TokenExplorer

MARKUP = "<b>x</b> %{customdata} $y$ & co"


class Gate:
    """Wraps an engine call: each call waits until the gate opens (it starts open)."""

    def __init__(self, call):
        self.call, self.open, self.calls = call, threading.Event(), []
        self.open.set()

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        assert self.open.wait(30), "the test never opened the gate"
        return self.call(*args, **kwargs)


# --- item 6: the rule in the base -----------------------------------------------------------------

class Shows(ExplorerWidget):
    """A minimal widget with one job that follows the input ("main") and one that does not ("slow")."""

    input_jobs = ("main",)

    def __init__(self):
        super().__init__()
        self.shown = {}

    def request(self, value, gate: threading.Event, name: str = "main"):
        def apply(result):
            self.shown[name] = result
        return self.submit(name, lambda job: (gate.wait(10), value)[1], apply, busy_text="…", doing="computing")


def test_a_refused_input_drops_older_results_and_keeps_its_error():
    w, gate = Shows(), threading.Event()
    w.request(1, gate)
    w.request("embedding", gate, name="slow")
    w._refuse_input(ValueError("bad labels"), "setting labels")
    gate.set()
    assert w.wait(10)
    assert "main" not in w.shown  # stale: computed from the input before the refused one
    assert w.shown["slow"] == "embedding"  # not an input job: it went on...
    assert w.error is not None and "bad labels" in w.error  # ...and did not clear the error
    w._accept_input()  # the next accepted edit: error gone, the paused request made again
    assert w.error is None
    assert w.wait(10) and w.shown["main"] == 1


def test_a_newer_request_replaces_a_paused_one_and_clears_the_error():
    w, gate = Shows(), threading.Event()
    w.request(1, gate)
    w._refuse_input(ValueError("bad"), "setting")
    w.request(2, gate)  # e.g. a valid value set from Python
    gate.set()
    assert w.wait(10) and w.shown["main"] == 2 and w.error is None
    w._accept_input()
    assert w.wait(10) and w.shown["main"] == 2  # the paused request 1 is not made again


def test_cancel_forgets_paused_requests():
    w, gate = Shows(), threading.Event()
    w.request(1, gate)
    w._refuse_input(ValueError("bad"), "setting")
    w.cancel()
    gate.set()
    w._accept_input()
    assert w.wait(10) and "main" not in w.shown


# --- item 6: each widget with typed input ---------------------------------------------------------

def test_heatmap_keeps_the_labels_error_while_an_older_request_finishes(explainer, cat, monkeypatch):
    w = HeatmapExplorer(explainer, cat, labels=["cat"])
    assert w.wait(60) and list(w.explanation.labels) == ["cat"]
    gate = Gate(explainer.explain)
    monkeypatch.setattr(explainer, "explain", gate)
    gate.open.clear()
    w.controls["labels"].value = "dog"  # a valid request starts and waits in the engine
    w.controls["labels"].value = " , "  # refused while it runs
    assert w.error is not None
    gate.open.set()
    assert w.wait(60)
    assert w.error is not None and "labels" in w.error  # the error of the last input stays
    assert list(w.explanation.labels) == ["cat"]  # the older request's maps were not applied
    assert w.describe()["titles"][0].endswith("cat")
    w.controls["opacity"].value = 0.4  # an accepted edit: the paused request is made again
    assert w.wait(60) and w.error is None and list(w.explanation.labels) == ["dog"]


def test_heatmap_bad_image_keeps_its_error(explainer, cat, monkeypatch):
    w = HeatmapExplorer(explainer, cat, labels=["cat"])
    assert w.wait(60)
    gate = Gate(explainer.explain)
    monkeypatch.setattr(explainer, "explain", gate)
    gate.open.clear()
    w.labels = ["dog"]
    with pytest.raises(Exception):
        w.image = b"not an image"
    gate.open.set()
    assert w.wait(60)
    assert w.error is not None and list(w.explanation.labels) == ["cat"]


def test_tokens_keeps_the_caption_error_while_an_older_request_finishes(explainer, cat, monkeypatch):
    w = TokenExplorer(explainer, cat, caption="a cat")
    assert w.wait(60) and w.error is None
    gate = Gate(tokens_module.token_attributions)
    monkeypatch.setattr(tokens_module, "token_attributions", gate)
    gate.open.clear()
    w.controls["caption"].value = "a dog"
    w.controls["caption"].value = "   "  # nothing the tokenizer can read: refused
    gate.open.set()
    assert w.wait(60)
    assert w.error is not None and "caption" in w.error.lower()
    assert w.caption == "a dog" and w.controls["caption"].value == "a dog"  # the widget is as it was
    assert [c["text"] for c in w.chips] == ["a", "cat"]  # the older request's tokens were not applied
    w.controls["opacity"].value = 0.3
    assert w.wait(60) and w.error is None and [c["text"] for c in w.chips] == ["a", "dog"]


def test_sam_keeps_the_text_error_while_an_older_request_finishes(explainer, tiny_sam, cat, monkeypatch):
    refiner = SamRefiner(tiny_sam)
    w = SamWidget(explainer, refiner, cat, text="cat")
    assert w.wait(60) and w.error is None
    gate = Gate(sam_module.map_point_scores)
    embedding = Gate(refiner.set_image)
    monkeypatch.setattr(sam_module, "map_point_scores", gate)
    monkeypatch.setattr(refiner, "set_image", embedding)
    gate.open.clear()
    embedding.open.clear()
    w.image = np.ascontiguousarray(cat[::-1])  # a new image: its embedding and the text's map wait
    w.controls["text"].value = "dog"
    w.controls["text"].value = "+"  # refused: an empty target
    gate.open.set()
    embedding.open.set()
    assert w.wait(60)
    assert w.error is not None and "text" in w.error
    assert w.sam_ready  # SAM's embedding does not follow the text: it was not paused
    assert w.explanation is None  # the older text's map was not applied
    w.controls["opacity"].value = 0.4
    assert w.wait(60) and w.error is None and list(w.explanation.labels) == ["dog"]


def test_decomposition_keeps_the_labels_error_while_an_older_request_finishes(explainer, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2)]
    w = DecompositionExplorer(explainer, images, texts=[f"text {i}" for i in range(12)], labels=["cat", "dog"],
                              cache_dir=tmp_path)
    assert w.wait(60) and w.error is None
    gate = Gate(w.session.contributions)
    w.session.contributions = gate
    gate.open.clear()
    w.controls["labels"].value = "car, tree"
    w.controls["labels"].value = " , "
    gate.open.set()
    assert w.wait(60)
    assert w.error is not None and "labels" in w.error
    assert w.view.describe()["readout"]["labels"] == ["cat", "dog"]
    w.controls["mode"].value = "ablate"
    assert w.wait(60) and w.error is None and w.view.describe()["readout"]["labels"] == ["car", "tree"]


# --- item 10: user strings reach plotly as text -----------------------------------------------------

def test_plotly_text_escapes_markup_and_templates():
    escaped = plotly_text(MARKUP)
    assert not set("<>%$") & set(escaped)
    assert html.unescape(escaped) == MARKUP  # what plotly shows: its entity decoding gives the text back


def figure_json(fig) -> str:
    """The figure as sent to the browser; user strings must be in it only in escaped form."""
    return json.dumps(json.loads(pio.to_json(fig)))


def assert_escaped(fig_json: str) -> None:
    assert "<b>x" not in fig_json and "%{customdata} $y" not in fig_json
    assert "&lt;b&gt;x&lt;/b&gt; &#37;{customdata} &#36;y&#36; &amp; co" in fig_json


def test_heatmap_escapes_labels_everywhere(explainer, cat):
    w = HeatmapExplorer(explainer, cat, labels=[MARKUP, "sky"], view="segmentation", method="clip_surgery")
    assert w.wait(60) and w.error is None
    assert MARKUP in w.describe()["legend"]
    assert_escaped(figure_json(w.current_figure))
    w.view = "overlay"
    assert w.wait(60)
    assert MARKUP in w.describe()["titles"][0]
    w.click(100, 100)
    assert_escaped(figure_json(w.current_figure))
    assert_escaped(figure_json(w.bar_chart))


def test_tokens_escapes_the_token_title(explainer, cat):
    w = TokenExplorer(explainer, cat, caption="cat %{customdata} $y$ <b>")
    assert w.wait(60) and w.error is None
    texts = [c["text"] for c in w.chips]
    for text, escaped in (("%{", "&#37;{"), ("$", "&#36;"), ("<", "&lt;")):
        w.select_token(w.chips[texts.index(text)]["token"])
        [title] = w.view.describe()["titles"]
        assert title.startswith(f"Map of \u201c{escaped}\u201d"), title
        sent = figure_json(w.current_figure)
        assert f"\\u201c{text}\\u201d" not in sent and f"\\u201c{escaped}\\u201d" in sent


def test_sam_escapes_the_text(explainer, tiny_sam, cat):
    w = SamWidget(explainer, SamRefiner(tiny_sam), cat, text="%{customdata} $y$")
    assert w.wait(60) and w.error is None
    sent = figure_json(w.view.fig)
    assert "%{customdata}" not in sent and "$y$" not in sent and "&#37;{customdata} &#36;y&#36;" in sent


def test_decomposition_escapes_labels(explainer, tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2)]
    w = DecompositionExplorer(explainer, images, texts=[f"text {i}" for i in range(12)], labels=[MARKUP, "dog"],
                              cache_dir=tmp_path)
    assert w.wait(60) and w.error is None
    shown = w.view.describe()
    assert MARKUP in shown["grid"]["title"] and MARKUP in shown["bars"]["title"]
    assert MARKUP in html.unescape(shown["maps"]["titles"][0])
    for fig in (w.view.grid, w.view.bars, w.view.maps.fig):
        assert_escaped(figure_json(fig))


def test_attention_sends_layer_names_through_the_one_helper(explainer, cat, monkeypatch):
    import clipsurgery_widgets.widgets.attention_layout as layout
    import clipsurgery_widgets.widgets.attention_view as view
    seen = []

    def spy(text):
        seen.append(str(text))
        return plotly_text(text)

    monkeypatch.setattr(layout, "plotly_text", spy)
    monkeypatch.setattr(view, "plotly_text", spy)
    w = AttentionExplorer(explainer, cat)
    assert w.wait(60) and w.error is None
    assert any("block 0" in s for s in seen)


def test_wait_covers_a_job_that_a_finished_job_starts_under_a_new_name():
    w, gate = Shows(), threading.Event()
    gate.set()

    def work(job):
        return 1

    def apply(result):
        w.shown["first"] = result
        w.request("second", threading.Event(), name="later")  # never released: still running after wait

    w.submit("first", work, apply, busy_text="…", doing="computing")
    assert w.wait(2) is False  # the job started by the first one is still running
    w.cancel()
