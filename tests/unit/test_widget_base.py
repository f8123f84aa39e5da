"""The shared widget base: background work with a stale-result guard, status, errors, static output."""
import base64
import io
import threading
import time

import ipywidgets
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from clipsurgery_widgets.engine.errors import ImageInputError
from clipsurgery_widgets.widgets import static_view
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
    bundle, metadata = w._repr_mimebundle_()  # outside IPython's display: waits for the pending work first
    assert set(metadata["image/png"]) == {"width", "height"}
    assert bundle[WIDGET_VIEW]["model_id"] == w.model_id
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert bundle["text/plain"] == "Counter: live view needs its kernel - run this cell again."
    assert repr(w).startswith("<Counter")


# --- display in IPython: the live view at once, the PNG after the cell ---------------------------

@pytest.fixture
def shell():
    """A real IPython shell whose displays are recorded (publisher.outputs) instead of printed."""
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    ipython = InteractiveShell.instance()
    ipython.display_pub = CapturingDisplayPublisher()
    yield ipython
    static_view._waiting.clear()
    InteractiveShell.clear_instance()


def _outputs(shell) -> list[dict]:
    return [o for o in shell.display_pub.outputs if WIDGET_VIEW in o["data"]]


@pytest.mark.parametrize("code", ["w", "from IPython.display import display\ndisplay(w)"],
                         ids=["last expression", "display()"])
def test_display_shows_the_view_at_once_and_adds_the_png_after_the_cell(shell, code):
    w, gate = Counter(), threading.Event()
    w.request(3, gate)
    shell.user_ns["w"] = w
    seen = {}

    def cell_done(result):  # registered first, so it runs before the widgets' own post_run_cell step
        seen.update(outputs=[dict(o) for o in shell.display_pub.outputs], busy=w.busy)

    shell.events.register("post_run_cell", cell_done)
    threading.Timer(0.3, gate.set).start()
    started = time.perf_counter()
    assert shell.run_cell(code).success
    # What the cell has sent when its code is done, before the kernel would report it finished:
    during = [o for o in seen["outputs"] if WIDGET_VIEW in o["data"]]
    assert seen["busy"], "the cell's code should end while the work is still running"
    assert len(during) == 1 and "image/png" not in during[0]["data"]
    assert not during[0]["update"] and during[0]["transient"]["display_id"]
    assert during[0]["data"]["text/plain"] == "Counter: live view needs its kernel - run this cell again."
    assert during[0]["data"][WIDGET_VIEW]["model_id"] == w.model_id
    # ... and after the cell (post_run_cell): the same output again, now with the finished PNG.
    later = _outputs(shell)
    assert len(later) == 2 and later[1]["update"]
    assert later[1]["transient"]["display_id"] == during[0]["transient"]["display_id"]
    assert base64.b64decode(later[1]["data"]["image/png"]).startswith(b"\x89PNG")
    assert later[1]["data"][WIDGET_VIEW] == during[0]["data"][WIDGET_VIEW]
    assert w.shown == 3 and time.perf_counter() - started >= 0.25  # the PNG waited for the work
    # Shown at its 1x size (a PNG drawn at twice the display resolution stays sharp on 2x screens).
    png = Image.open(io.BytesIO(base64.b64decode(later[1]["data"]["image/png"])))
    shown = later[1]["metadata"]["image/png"]
    assert shown["width"] == round(png.width * 72 / w.static_dpi) and shown["height"] < png.height


def test_png_metadata_travels_with_the_update(shell, monkeypatch):
    w = Counter()
    w.request(2)
    monkeypatch.setattr(w, "_static_png_metadata", lambda png: {"width": 144})
    shell.user_ns["w"] = w
    assert shell.run_cell("w").success
    update = _outputs(shell)[-1]
    assert update["update"] and update["metadata"] == {"image/png": {"width": 144}}


def test_a_widget_with_nothing_to_draw_keeps_its_live_view_only(shell):
    w = Counter()  # no request: no figure to draw
    shell.user_ns["w"] = w
    assert shell.run_cell("w").success
    outputs = _outputs(shell)
    assert len(outputs) == 1 and "image/png" not in outputs[0]["data"]
    assert static_view._waiting == []  # nothing left over for the next cell


def test_each_widget_of_a_cell_gets_its_own_png(shell):
    a, b = Counter(), Counter()
    a.request(1)
    b.request(9)
    shell.user_ns.update(a=a, b=b)
    assert shell.run_cell("from IPython.display import display\ndisplay(a)\ndisplay(b)").success
    first, second, *updates = _outputs(shell)
    assert [u["transient"]["display_id"] for u in updates] == [first["transient"]["display_id"],
                                                                 second["transient"]["display_id"]]
    assert updates[0]["data"]["image/png"] != updates[1]["data"]["image/png"]
    assert [u["data"][WIDGET_VIEW]["model_id"] for u in updates] == [a.model_id, b.model_id]


def test_kernel_note_names_the_widget_and_the_fix():
    assert static_view.kernel_note(Counter()) == "Counter: live view needs its kernel - run this cell again."


# --- Stop: offered only while something runs ------------------------------------------------------

class Stoppable(Counter):
    stoppable_jobs = ("pass",)

    def __init__(self):
        super().__init__()
        self.controls = {"stop": ipywidgets.Button(description="Stop")}


def test_stop_shows_only_while_a_job_it_stops_runs():
    w, gate = Stoppable(), threading.Event()
    stop = w.controls["stop"]
    assert stop.layout.visibility == "hidden" and stop.disabled
    w.request(1, name="explain")                       # not a job Stop stops
    assert w.wait(5) and stop.layout.visibility == "hidden"
    w.request(2, gate, name="pass")
    assert stop.layout.visibility == "visible" and not stop.disabled
    gate.set()
    assert w.wait(5) and w.shown == 2
    assert stop.layout.visibility == "hidden" and stop.disabled
    gate.clear()
    w.request(3, gate, name="pass")
    assert stop.layout.visibility == "visible"
    w.cancel("pass")                                   # what Stop does
    assert stop.layout.visibility == "hidden"
    gate.set()
    w.wait(5)


def test_stop_follows_every_job_by_default_and_failures_hide_it():
    w, gate = Counter(), threading.Event()
    w.controls = {"stop": ipywidgets.Button(description="Stop")}
    w.request(1, gate, name="anything", fail=RuntimeError("no"))
    assert w.controls["stop"].layout.visibility == "visible"
    gate.set()
    assert w.wait(5) and w.error is not None
    assert w.controls["stop"].layout.visibility == "hidden"


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
