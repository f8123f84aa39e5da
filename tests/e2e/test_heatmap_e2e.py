"""The quickstart notebook in a real JupyterLab and Chromium: run it, then use the heat-map explorer.

Also measures, in the browser, how long a cached label toggled off/on takes to show (from the
Enter key to the new heat-map data in the plot) and how long a new image takes to show its maps.
Numbers go to test-artifacts/heatmap-e2e-timings.json.
"""
from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

import pytest
from conftest import hover_over
from PIL import Image

from clipsurgery_widgets.engine.images import sample_image

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

EXPLORER = ".clipsurgery-widget >> nth=0"
PLOT_JS = "document.querySelector('.clipsurgery-widget .csw-plot .js-plotly-plot')"
BARS_JS = "document.querySelector('.clipsurgery-widget .csw-bars .js-plotly-plot')"
HEAT = 0  # trace index of panel 0's heat map (heat, outline per panel; the image is a layout image)
PANEL_TRACES = 2
TOGGLE_ROUNDS = 3


def heat_summary(page) -> dict:
    """Shape and sum of panel 0's heat map as the browser has it (None before it has one)."""
    return page.evaluate(f"""() => {{
        const z = {PLOT_JS}.data[{HEAT}].z;
        if (!z) return null;
        let total = 0; for (const row of z) for (const v of row) total += v;
        return {{rows: z.length, cols: z[0].length, sum: total}};
    }}""")


def arm_change_timer(page, trigger_selector: str, event: str = "keydown") -> None:
    """Start a timer at ``event`` on the trigger; it stops at the first frame with new heat data."""
    page.evaluate(f"""(sel) => {{
        const gd = {PLOT_JS};
        const before = gd.data[{HEAT}].z;
        const trigger = document.querySelector(sel);
        let start = null;
        trigger.addEventListener('{event}', (e) => {{
            if ('{event}' !== 'keydown' || e.key === 'Enter') start = performance.now();
        }}, {{capture: true}});
        window.__cswChange = new Promise((resolve) => {{
            const poll = () => {{
                const z = gd.data[{HEAT}].z;
                if (start !== null && z && z.length && z !== before) resolve(performance.now() - start);
                else requestAnimationFrame(poll);
            }};
            poll();
        }});
    }}""", trigger_selector)


def wait_for_change_ms(page, timeout: float = 30_000) -> float:
    page.wait_for_function("() => window.__cswChange !== undefined")
    return page.evaluate("() => Promise.race([window.__cswChange, "
                         f"new Promise((_, no) => setTimeout(() => no(new Error('no change')), {timeout}))])")


def test_quickstart_explorer_in_browser(lab, tmp_path):
    page = lab.page
    lab.open("notebooks/01_quickstart.ipynb")
    lab.run_all()
    assert lab.error_outputs() == []
    lab.wait_for_widgets()
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()
    assert explorer.locator(".csw-error").inner_text().strip() == ""

    # The notebook left the explorer on the grid view; go back to one label over the image.
    explorer.locator(".csw-view button", has_text="one label").click()
    page.wait_for_function(f"() => {PLOT_JS}.data[{HEAT}].visible === true && "
                           f"{PLOT_JS}.data[{HEAT + PANEL_TRACES}].visible === false")
    before = heat_summary(page)
    assert before is not None and before["rows"] > 10 and before["cols"] > 10
    labels_box = explorer.locator(".csw-labels input")
    original = labels_box.input_value()
    lab.screenshot("heatmap-01-after-run")

    # Type a new label: the multi-label surgery changes every map, so panel 0's data must change.
    arm_change_timer(page, ".clipsurgery-widget .csw-labels input")
    labels_box.fill(original + ", dog")
    labels_box.press("Enter")
    first_ms = wait_for_change_ms(page)
    after = heat_summary(page)
    assert after != before, "the heat map did not change after adding a label"
    assert "dog" in explorer.locator(".csw-label select").inner_text()

    # A cached label toggled off and on again: both explanations are cache hits now.
    toggles, kernel_ms = [], []
    for _ in range(TOGGLE_ROUNDS):
        for text in (original, original + ", dog"):
            arm_change_timer(page, ".clipsurgery-widget .csw-labels input")
            labels_box.fill(text)
            labels_box.press("Enter")
            toggles.append(wait_for_change_ms(page))
            page.wait_for_function("() => !document.querySelector('.clipsurgery-widget .csw-status .csw-spinner')")
            status = explorer.locator(".csw-status").inner_text()
            kernel_ms.append(1000 * float(re.search(r"· ([\d.]+) s", status).group(1)))  # the widget's own timing

    # Hover shows the normalised and the raw score.
    drag = explorer.locator(".csw-plot .nsewdrag").first
    box = drag.bounding_box()
    hover = hover_over(page, box, 0.3, 0.4)
    hover_text = hover.text_content()
    assert "normalised" in hover_text and "raw score" in hover_text, hover_text

    # Click: the per-label bar chart appears with the clicked patch's values.
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    page.wait_for_function(f"() => {BARS_JS} && {BARS_JS}.data[0].y && {BARS_JS}.data[0].y.length > 0",
                           timeout=60_000)
    bars = page.evaluate(f"""() => {{
        const gd = {BARS_JS}, heat = {PLOT_JS}.data[{HEAT}];
        return {{x: gd.data[0].x, y: Array.from(gd.data[0].y), title: gd.layout.title.text,
                 label: document.querySelector('.clipsurgery-widget .csw-label select').value,
                 customdata: heat.customdata, x0: heat.x0, dx: heat.dx, y0: heat.y0, dy: heat.dy}};
    }}""")
    assert bars["x"] == [t.strip() for t in (original + ", dog").split(",")]
    pixel = re.search(r"pixel \((\d+), (\d+)\)", bars["title"])
    assert pixel, bars["title"]
    col = round((int(pixel.group(1)) - bars["x0"]) / bars["dx"])
    row = round((int(pixel.group(2)) - bars["y0"]) / bars["dy"])
    shown = bars["y"][bars["x"].index(bars["label"])]
    assert shown == pytest.approx(bars["customdata"][row][col], abs=2e-4)
    assert abs(sum(bars["y"])) < 1e-3 * len(bars["y"]) + 1e-3, "multi-label surgery scores sum to zero per patch"
    explorer.scroll_into_view_if_needed()
    lab.screenshot("heatmap-02-clicked")
    explorer.screenshot(path=str(ARTIFACTS / "heatmap-explorer.png"))

    # A new image: progress shows in the status line until its maps arrive.
    upload = tmp_path / "astronaut.png"
    Image.fromarray(sample_image("astronaut")[::2, ::2]).save(upload)
    page.evaluate("""() => {
        window.__cswStatus = [];
        const status = document.querySelector('.clipsurgery-widget .csw-status');
        new MutationObserver(() => {
            window.__cswStatus.push([!!status.querySelector('.csw-spinner'), status.textContent]);
        }).observe(status, {subtree: true, childList: true, characterData: true});
    }""")
    # ipywidgets' FileUpload opens a detached <input type=file>: answer its file chooser. The
    # timer runs from the click on the upload button (the chooser answers at once here).
    arm_change_timer(page, ".clipsurgery-widget .csw-upload", event="click")
    with page.expect_file_chooser() as chooser:
        explorer.locator(".csw-upload").click()
    chooser.value.set_files(str(upload))
    new_image_ms = wait_for_change_ms(page, timeout=60_000)
    page.wait_for_function("() => !document.querySelector('.clipsurgery-widget .csw-status .csw-spinner')")
    statuses = page.evaluate("() => window.__cswStatus")
    assert any(busy and "Encoding the image" in text for busy, text in statuses), statuses
    image = page.evaluate(f"() => {PLOT_JS}.layout.images[0]")
    assert (image["sizex"], image["sizey"]) == (256, 256)  # the astronaut replaced the cat
    lab.screenshot("heatmap-03-new-image")

    timings = {"first_new_label_ms": round(first_ms, 1),
               "cached_toggle_ms": [round(t, 1) for t in toggles],
               "cached_toggle_median_ms": round(statistics.median(toggles), 1),
               "cached_toggle_kernel_median_ms": round(statistics.median(kernel_ms), 1),
               "new_image_ms": round(new_image_ms, 1),
               "model": os.environ.get("CLIPSURGERY_E2E_MODEL", "tiny-random-vit")}
    (ARTIFACTS / "heatmap-e2e-timings.json").write_text(json.dumps(timings, indent=2))
    print("\ne2e timings:", json.dumps(timings))  # reported, not asserted: timing belongs in benchmarks
