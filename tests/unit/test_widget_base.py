"""The shared widget base: background work with a stale-result guard, status, errors, static output."""
import base64
import threading
import time

import numpy as np
import pytest
from matplotlib.figure import Figure

from clipsurgery_widgets.engine.errors import ImageInputError
from clipsurgery_widgets.widgets.base import ExplorerWidget, LatestOnlyRunner

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Counter(ExplorerWidget):
    """A minimal widget: its 'view' is the last applied value."""

    def __init__(self):
        super().__init__()
        self.shown = None
        self.applied = []
        self.children = [self._status_html, self._error_html]

    def request(self, value, gate: threading.Event | None = None, fail: Exception | None = None, name="main",
                seen: list | None = None):
        def work(job):
            if seen is not None:
                seen.append(job)
            if gate is not None:
                assert gate.wait(10)
            if fail is not None:
                raise fail
            return value

        def apply(result):
            self.applied.append(result)
            self.shown = result

        return self.submit(name, work, apply, busy_text=f"computing {value}…", doing="computing")

    def _render_figure(self):
        if self.shown is None:
            raise ValueError("nothing yet")
        fig = Figure(figsize=(2, 1))
        fig.subplots().imshow(np.full((4, 4), self.shown, float), vmin=0, vmax=10)
        return fig


def test_runner_drops_queued_jobs_when_a_newer_one_arrives():
    runner, ran, gate = LatestOnlyRunner(), [], threading.Event()
    runner.submit(lambda g: (gate.wait(5), ran.append(("first", g))))
    time.sleep(0.05)
    runner.submit(lambda g: ran.append(("second", g)))   # queued, then replaced
    third = runner.submit(lambda g: ran.append(("third", g)))
    assert runner.busy and not runner.is_current(1) and runner.is_current(third)
    assert runner.wait(0.1) is False  # still blocked
    gate.set()
    assert runner.wait(5)
    assert [name for name, _ in ran] == ["first", "third"]
    assert not runner.busy


def test_runner_survives_a_crashing_job():
    runner, ran = LatestOnlyRunner(), []
    runner.submit(lambda g: 1 / 0)
    assert runner.wait(5)
    runner.submit(lambda g: ran.append(g))
    assert runner.wait(5) and ran == [2]


def test_submit_applies_the_result_and_reports_done():
    w = Counter()
    w.request(3)
    assert w.wait(5)
    assert w.shown == 3 and w.status.startswith("Done in") and w.error is None and not w.busy


def test_busy_status_shows_progress_until_the_result_arrives():
    w, gate = Counter(), threading.Event()
    w.request(4, gate)
    assert w.busy and w.status == "computing 4…" and "csw-spinner" in w._status_html.value
    gate.set()
    w.wait(5)
    assert "csw-spinner" not in w._status_html.value and w.shown == 4


def test_a_newer_request_discards_the_stale_result():
    w, slow = Counter(), threading.Event()
    w.request(1, slow)              # running, blocked
    time.sleep(0.05)
    w.request(2)                    # newer input while 1 is still computing
    slow.set()
    assert w.wait(5)
    assert w.applied == [2] and w.shown == 2


def test_errors_appear_in_the_widget_escaped_with_the_traceback_folded():
    w = Counter()
    w.request(5)
    w.wait(5)
    w.request(6, fail=RuntimeError("<script>alert(1)</script> broke"))
    w.wait(5)
    assert w.error == "Something went wrong while computing: RuntimeError: <script>alert(1)</script> broke"
    html = w._error_html.value
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<details" in html and "Traceback" in html and "<summary" in html
    assert w._error_html.layout.display is None
    assert w.shown == 5 and w.status == "Failed while computing."  # the previous view stays
    w.request(7)                   # ... and the widget keeps working
    w.wait(5)
    assert w.error is None and w.shown == 7 and w._error_html.layout.display == "none"


def test_our_own_errors_are_shown_as_written():
    w = Counter()
    w.request(1, fail=ImageInputError("Image file not found: x.png. Check the path."))
    w.wait(5)
    assert w.error == "Image file not found: x.png. Check the path."


def test_guarded_handlers_report_instead_of_raising():
    w = Counter()
    handler = w._guarded(lambda change: {}["missing"], "reading the settings")
    assert handler({"new": 1}) is None
    assert w.error.startswith("Something went wrong while reading the settings: KeyError")


def test_status_text_is_escaped():
    w = Counter()
    w._set_status("<b>label</b> & co")
    assert w.status == "<b>label</b> & co"
    assert "&lt;b&gt;label&lt;/b&gt; &amp; co" in w._status_html.value


def test_static_png_sits_next_to_the_live_view():
    w = Counter()
    bundle = w._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and "image/png" not in bundle  # nothing to draw yet: no PNG, no crash
    w.request(8)
    bundle = w._repr_mimebundle_()  # waits for the pending work first
    assert bundle[WIDGET_VIEW]["model_id"] == w.model_id
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert bundle["text/plain"].startswith("<Counter")


def test_figure_waits_for_pending_work_and_save_writes_each_format(tmp_path):
    w, gate = Counter(), threading.Event()
    w.request(9, gate)
    threading.Timer(0.2, gate.set).start()
    fig = w.figure()
    assert fig.axes[0].images[0].get_array()[0, 0] == 9
    assert w.save(tmp_path / "v.png", dpi=40).read_bytes().startswith(b"\x89PNG")
    assert w.save(tmp_path / "v.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert w.save(tmp_path / "v.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="Unsupported figure format"):
        w.save(tmp_path / "v.gif")


# --- named jobs ---------------------------------------------------------------------------------

def test_named_jobs_run_side_by_side_and_replace_only_their_own_name():
    w, slow, quick_seen, slow_seen = Counter(), threading.Event(), [], []
    w.request(1, slow, name="embedding", seen=slow_seen)   # a long job under one name
    w.request(2, name="explain", seen=quick_seen)          # another name is not held up by it
    assert w.wait(5, name="explain") and w.shown == 2
    assert w.busy and not w.wait(0.05)                      # the embedding still runs
    w.request(3, name="embedding")                          # replaces the running embedding
    assert slow_seen[0].stopped.is_set()                    # ... which is told to stop at once
    slow.set()
    assert w.wait(5)
    assert w.applied == [2, 3] and not quick_seen[0].stopped.is_set()


def test_cancel_drops_the_result_and_keeps_the_view():
    w, gate, seen = Counter(), threading.Event(), []
    w.request(4)
    w.wait(5)
    w.request(5, gate, name="pass", seen=seen)
    time.sleep(0.05)
    w.cancel("pass")
    assert seen and seen[0].stopped.is_set()
    gate.set()
    assert w.wait(5)
    assert w.shown == 4 and w.applied == [4]


def test_progress_updates_the_status_line_until_stopped():
    w, gate, seen = Counter(), threading.Event(), []
    w.request(6, gate, seen=seen)
    time.sleep(0.05)
    seen[0].progress("3 of 10 images")
    assert w.status == "3 of 10 images"
    w.cancel()
    seen[0].progress("4 of 10 images")                      # ignored once stopped
    assert w.status == "3 of 10 images"
    gate.set()
    w.wait(5)
