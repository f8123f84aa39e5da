"""The SAM notebook in a real JupyterLab and Chromium: clicks on the image become SAM points.

Checks that a click on the SAM panel adds a point that appears in the plot and in
``widget.points`` (read back from the kernel), that the mask overlay changes, that Alt-click adds
a negative point, that clicking a point removes it and that a drag in box mode sets SAM's box.
Measures, in the browser, the time from the mouse press to the frame with the new mask (tiny
SAM), and reads the server-side part from the widget's status line; numbers go to
test-artifacts/sam-e2e-timings.json (benchmarks/bench_sam_widget.py uses them to estimate the
vit_b figure).
"""
from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

import pytest

from clipsurgery_widgets.widgets.sam_view import IMG_MASK

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # as in conftest.py

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PLOT_JS = "document.querySelector('.clipsurgery-widget .csw-plot .js-plotly-plot')"
DRAG = ".clipsurgery-widget .csw-plot .nsewdrag[data-subplot='xy']"  # the SAM panel
ROUNDS = 4


def plot_state(page) -> dict:
    """What the browser shows on the SAM panel: the mask image, the points (circles) and the box."""
    return page.evaluate(f"""() => {{
        const gd = {PLOT_JS}, shapes = gd.layout.shapes || [], mask = gd.layout.images[{IMG_MASK}];
        const at = kind => shapes.filter(s => s.name === kind + ' point').map(s => [s.xanchor, s.yanchor]);
        const box = shapes.filter(s => s.name === 'box').map(s => [s.x0, s.y0, s.x1, s.y1]);
        return {{mask: mask.source, maskVisible: mask.visible, pos: at('positive'), neg: at('negative'),
                 box: box.length ? box[0] : null}};
    }}""")


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Where image pixel (x, y) of the SAM panel is on the screen (from plotly's own axis mapping)."""
    page.locator(DRAG).scroll_into_view_if_needed()
    where = None
    for _ in range(50):  # wait for any scrolling to settle
        now = page.evaluate(f"""([x, y]) => {{
            const gd = {PLOT_JS}, xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const r = gd.querySelector('.main-svg').getBoundingClientRect();
            return [r.left + xa._offset + xa.d2p(x), r.top + ya._offset + ya.d2p(y)];
        }}""", [x, y])
        if now == where:
            break
        where = now
        page.wait_for_timeout(50)
    return tuple(where)


def click_at(page, x: float, y: float) -> None:
    """Move to image pixel (x, y) of the SAM panel, wait until plotly hovers that spot, click.

    plotly answers a click with the point it last found under the mouse (hover is throttled), so
    a jump-and-click right away could land on whatever was under the old position.
    """
    sx, sy = screen_point(page, x, y)
    page.mouse.move(sx - 3, sy - 3)
    page.mouse.move(sx, sy, steps=3)
    page.wait_for_function(f"""([x, y]) => {{
        const hd = {PLOT_JS}._hoverdata;
        return hd && hd.length && Math.abs(hd[0].x - x) <= 1.5 && Math.abs(hd[0].y - y) <= 1.5;
    }}""", arg=[x, y], timeout=10_000)
    page.mouse.click(sx, sy)


def free_spot(state: dict, width: int, height: int) -> tuple[int, int]:
    """A pixel far from every point already there (so a click adds rather than removes)."""
    taken = state["pos"] + state["neg"]
    candidates = [(int(width * fx), int(height * fy)) for fx in (0.2, 0.35, 0.5, 0.65, 0.8)
                  for fy in (0.25, 0.45, 0.65, 0.85)]
    return max(candidates, key=lambda c: min(((c[0] - p[0]) ** 2 + (c[1] - p[1]) ** 2 for p in taken), default=1e9))


def arm_mask_timer(page) -> None:
    """Start at the next mouse press on the SAM panel; stop at the first frame with a new mask."""
    page.evaluate(f"""(sel) => {{
        const gd = {PLOT_JS}, before = gd.layout.images[{IMG_MASK}].source;
        let start = null;
        document.querySelector(sel).addEventListener('mousedown', () => {{ start = performance.now(); }},
                                                     {{capture: true, once: true}});
        window.__cswMask = new Promise((resolve) => {{
            const poll = () => {{
                if (start !== null && gd.layout.images[{IMG_MASK}].source !== before) {{
                    requestAnimationFrame(() => resolve(performance.now() - start));  // the frame that shows it
                }} else requestAnimationFrame(poll);
            }};
            poll();
        }});
    }}""", DRAG)


def mask_change_ms(page, timeout: float = 20_000) -> float:
    return page.evaluate("() => Promise.race([window.__cswMask, "
                         f"new Promise((_, no) => setTimeout(() => no(new Error('no new mask')), {timeout}))])")


def server_update_ms(page, point) -> float:
    """The widget's own server-side time for the click that added ``point``, from its status line."""
    status = page.locator(".clipsurgery-widget .csw-status")
    status.filter(has_text=f"at ({int(point[0])}, {int(point[1])})").wait_for()
    return float(re.search(r"update (\d+) ms", status.inner_text()).group(1))


def run_in_new_cell(lab, code: str, timeout: float = 30.0) -> dict:
    """Type ``code`` (which prints one JSON line after 'CSW:') into a new last cell, run it, parse it."""
    page = lab.page
    cells = page.locator(f"{NOTEBOOK} .jp-Cell")
    count = cells.count()
    cells.nth(count - 1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length > n",
                           arg=[f"{NOTEBOOK} .jp-Cell", count])
    page.keyboard.press("Enter")
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")
    output = cells.nth(count).locator(".jp-OutputArea-output")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.first.inner_text() if output.count() else ""
        if "CSW:" in text:
            return json.loads(text.split("CSW:", 1)[1].strip().splitlines()[0])
        time.sleep(0.2)
    raise AssertionError(f"no output from the new cell; it shows {output.all_inner_texts() if output.count() else []}")


def test_clicks_on_the_image_become_sam_points(lab):
    page = lab.page
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    lab.open("notebooks/04_sam_refinement.ipynb")
    lab.run_all()
    assert lab.error_outputs() == []
    lab.wait_for_widgets()
    widget = page.locator(".clipsurgery-widget").first
    widget.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('.clipsurgery-widget .csw-sam-status')"
                           ".textContent.includes('SAM ready')")
    assert widget.locator(".csw-error").inner_text().strip() == ""
    lab.screenshot("sam-01-after-run")
    kernel = run_in_new_cell(lab, 'import json; print("CSW:" + json.dumps({"size": list(widget.image.shape[:2]), '
                                  '"points": widget.points.tolist()}))')
    height, width = kernel["size"]
    state = plot_state(page)
    shown = sorted(map(tuple, state["pos"] + state["neg"]))
    assert shown == sorted(map(tuple, kernel["points"])), "the plot and widget.points disagree after the run"

    # Clicks that add a positive point: the plot, widget.points and the mask all follow.
    round_trips, server = [], []
    for _ in range(ROUNDS):
        state = plot_state(page)
        x, y = free_spot(state, width, height)
        arm_mask_timer(page)
        click_at(page, x, y)
        round_trips.append(mask_change_ms(page))
        after = plot_state(page)
        assert len(after["pos"]) == len(state["pos"]) + 1 and after["neg"] == state["neg"], (x, y, state, after)
        new = [p for p in after["pos"] if p not in state["pos"]][0]
        assert abs(new[0] - x) <= 2 and abs(new[1] - y) <= 2, (new, (x, y))  # the click grid is 2 px here
        assert after["mask"] != state["mask"] and after["maskVisible"]
        server.append(server_update_ms(page, new))
    kernel = run_in_new_cell(lab, 'print("CSW:" + json.dumps({"points": widget.points.tolist(), '
                                  '"labels": widget.point_labels.tolist(), "last": widget.last_click}))')
    assert kernel["points"][-1] == [int(v) for v in new] and kernel["labels"][-1] == 1
    assert sorted(map(tuple, kernel["points"])) == sorted(map(tuple, after["pos"] + after["neg"]))
    assert kernel["last"]["update_ms"] == pytest.approx(server[-1], abs=1)  # the status line tells the truth
    widget.screenshot(path=str(ARTIFACTS / "sam-widget.png"))

    # Alt-click adds a negative point; clicking that point again removes it.
    state = plot_state(page)
    x, y = free_spot(state, width, height)
    page.keyboard.down("Alt")
    click_at(page, x, y)
    page.keyboard.up("Alt")
    page.wait_for_function(f"(n) => {PLOT_JS}.layout.shapes.filter(s => s.name === 'negative point').length > n",
                           arg=len(state["neg"]))
    negative = [p for p in plot_state(page)["neg"] if p not in state["neg"]][0]
    lab.screenshot("sam-02-negative-point")
    click_at(page, *negative)
    page.wait_for_function(f"(n) => {PLOT_JS}.layout.shapes.filter(s => s.name === 'negative point').length === n",
                           arg=len(state["neg"]))
    kernel = run_in_new_cell(lab, 'print("CSW:" + json.dumps({"points": widget.points.tolist()}))')
    assert [int(v) for v in negative] not in kernel["points"]
    assert widget.locator(".csw-error").inner_text().strip() == ""

    # Box mode: a drag on the SAM panel becomes SAM's box prompt.
    widget.locator(".csw-mode button", has_text="drag a box").click()
    page.wait_for_function(f"() => {PLOT_JS}._fullLayout.dragmode === 'select'")
    (ax, ay), (bx, by) = screen_point(page, width * 0.3, height * 0.3), screen_point(page, width * 0.7, height * 0.8)
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move(bx, by, steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => {PLOT_JS}.layout.shapes.some(s => s.name === 'box')")
    widget.screenshot(path=str(ARTIFACTS / "sam-03-box.png"))
    page.wait_for_function(f"() => ({PLOT_JS}.layout.selections || []).length === 0")  # no dotted leftover
    kernel = run_in_new_cell(lab, 'print("CSW:" + json.dumps({"box": widget.box.tolist()}))')
    assert plot_state(page)["box"] == pytest.approx(kernel["box"])
    assert kernel["box"] == pytest.approx([width * 0.3, height * 0.3, width * 0.7, height * 0.8], abs=2)
    assert errors == [], errors

    timings = {"sam": "tiny", "browser_click_to_mask_ms": [round(t, 1) for t in round_trips],
               "browser_click_to_mask_median_ms": round(statistics.median(round_trips), 1),
               "server_update_ms": server, "server_update_median_ms": statistics.median(server)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "sam-e2e-timings.json").write_text(json.dumps(timings, indent=2))
    print("\nSAM e2e timings:", json.dumps(timings))
    assert timings["browser_click_to_mask_median_ms"] < 1000  # target for vit_b is 300 ms: see the benchmark
