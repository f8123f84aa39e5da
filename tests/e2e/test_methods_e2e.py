"""The heat-map explorer's dense methods in a real JupyterLab and Chromium.

Runs the quickstart notebook, then in its explorer: picks a method in the menu (the overlay shows
that method), opens the "methods" view (labels as rows, methods as columns; the panel titles are
read from the plot's DOM), adds a column with its toggle, and clicks one panel: the bar chart
answers with that method's scores, the clicked row's label highlighted.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

EXPLORER = ".clipsurgery-widget >> nth=0"
PLOT_JS = "document.querySelector('.clipsurgery-widget .csw-plot .js-plotly-plot')"
BARS_JS = "document.querySelector('.clipsurgery-widget .csw-bars .js-plotly-plot')"
IDLE_JS = "() => !document.querySelector('.clipsurgery-widget .csw-status .csw-spinner')"
LABELS = ["cat", "grass", "sky", "ground"]  # the notebook's labels
PANEL_TRACES = 2  # heat map and outline per panel


def shown_titles(page) -> list[str]:
    """The panel titles as the browser draws them (plotly draws only visible annotations)."""
    return page.evaluate(f"""() => Array.from({PLOT_JS}.querySelectorAll('.annotation-text'))
                                        .map(n => n.textContent)""")


def wait_for_titles(page, expected: list[str], timeout: float = 60_000) -> None:
    page.wait_for_function(f"""(want) => {{
        const got = Array.from({PLOT_JS}.querySelectorAll('.annotation-text')).map(n => n.textContent);
        return got.length === want.length && got.every((t, i) => t === want[i]);
    }}""", arg=expected, timeout=timeout)


def wait_for_heat(page, panels: int, timeout: float = 60_000) -> None:
    """Until the first ``panels`` heat maps all hold data."""
    page.wait_for_function(f"""(n) => {{
        const data = {PLOT_JS}.data;
        for (let p = 0; p < n; p++) {{
            const z = data[p * {PANEL_TRACES}].z;
            if (!z || !z.length) return false;
        }}
        return true;
    }}""", arg=panels, timeout=timeout)


def panel_sum(page, panel: int) -> float:
    return page.evaluate(f"""(p) => {{
        let total = 0; for (const row of {PLOT_JS}.data[p * {PANEL_TRACES}].z) for (const v of row) total += v;
        return total;
    }}""", panel)


def test_method_menu_and_methods_view_in_browser(lab):
    page = lab.page
    lab.run_notebook("notebooks/01_quickstart.ipynb")
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()

    # One label over the image, CLIP Surgery by default; then NACLIP from the method menu.
    explorer.locator(".csw-view button", has_text="one label").click()
    wait_for_titles(page, ["CLIP Surgery: cat"])
    wait_for_heat(page, 1)
    surgery_sum = panel_sum(page, 0)
    explorer.locator(".csw-method select").select_option(label="NACLIP")
    wait_for_titles(page, ["NACLIP: cat"])
    page.wait_for_function(IDLE_JS, timeout=60_000)
    wait_for_heat(page, 1)
    assert panel_sum(page, 0) != pytest.approx(surgery_sum), "the overlay still shows CLIP Surgery's map"

    # The methods view: labels as rows, the compared methods as columns.
    assert not explorer.locator(".csw-methods-row").is_visible()
    explorer.locator(".csw-view button", has_text="methods").click()
    names = ["raw CLIP", "CLIP Surgery", "SCLIP", "NACLIP"]
    wait_for_titles(page, [f"{name}: {label}" for label in LABELS for name in names])
    page.wait_for_function(IDLE_JS, timeout=60_000)
    wait_for_heat(page, len(LABELS) * len(names))
    assert explorer.locator(".csw-methods-row").is_visible()
    lab.screenshot("methods-01-view")

    # GEM joins as a fifth column.
    explorer.locator(".csw-compared-gem").click()
    names.append("GEM")
    wait_for_titles(page, [f"{name}: {label}" for label in LABELS for name in names])
    page.wait_for_function(IDLE_JS, timeout=60_000)
    wait_for_heat(page, len(LABELS) * len(names))
    assert len(shown_titles(page)) == 20

    # A click on row "grass", column SCLIP: the bars answer with SCLIP's scores there.
    panel = 1 * len(names) + names.index("SCLIP")
    drag = explorer.locator(f".csw-plot .draglayer .x{panel + 1}y{panel + 1} .nsewdrag")
    box = drag.bounding_box()
    assert box is not None and box["width"] > 20, "the SCLIP panel of row 'grass' is not on the page"
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.wait_for_function(f"() => {BARS_JS} && {BARS_JS}.data[0].y && {BARS_JS}.data[0].y.length > 0",
                           timeout=60_000)
    bars = page.evaluate(f"""() => {{
        const gd = {BARS_JS}, marker = {PLOT_JS}.data.find(t => t.name === 'clicked');
        return {{x: gd.data[0].x, colors: gd.data[0].marker.color, title: gd.layout.title.text,
                 markerAxis: marker.xaxis}};
    }}""")
    assert bars["x"] == LABELS
    assert bars["title"].startswith("SCLIP score of every label"), bars["title"]
    highlighted = [label for label, colour in zip(bars["x"], bars["colors"]) if colour == "#d62728"]
    assert highlighted == ["grass"]
    assert bars["markerAxis"] == f"x{panel + 1}"
    explorer.scroll_into_view_if_needed()
    lab.screenshot("methods-02-clicked")
