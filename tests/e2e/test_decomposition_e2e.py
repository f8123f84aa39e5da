"""The decomposition notebook in a real JupyterLab and Chromium: select a head, toggle an ablation."""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
EXPLORER = ".clipsurgery-widget:has(.csw-grid) >> nth=0"
TEXTS = ".clipsurgery-widget .csw-head-texts"
READOUT = ".clipsurgery-widget .csw-readout"
GRID_JS = "document.querySelector('.clipsurgery-widget .csw-grid .js-plotly-plot')"


def test_decomposition_explorer_in_browser(lab):
    page = lab.page
    lab.open("notebooks/05_decomposition.ipynb")
    lab.run_all(timeout=240)
    assert lab.error_outputs() == []
    lab.wait_for_widgets(".clipsurgery-widget .csw-grid .js-plotly-plot")
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    page.wait_for_function(f"() => {GRID_JS}.data[0].z && {GRID_JS}.data[0].z.length > 0")
    layers, heads = page.evaluate(f"() => [{GRID_JS}.data[0].z.length, {GRID_JS}.data[0].z[0].length]")

    # Selecting a head (a click on its grid cell) shows its TEXTSPAN texts.
    target = (layers // 2, heads - 1)
    drag = explorer.locator(".csw-grid .nsewdrag").first
    box = drag.bounding_box()
    x = box["x"] + box["width"] * (target[1] + 0.5) / heads
    y = box["y"] + box["height"] * (target[0] + 0.5) / layers  # layer 0 is the top row
    page.mouse.click(x, y)
    texts = page.locator(TEXTS)
    page.wait_for_function("([sel, want]) => { const el = document.querySelector(sel);"
                           " return el && el.innerText.includes(want) && el.querySelector('li'); }",
                           arg=[TEXTS, f"Layer {target[0]}, head {target[1]}"], timeout=60_000)
    assert texts.locator("li").count() >= 1
    selected = page.evaluate(f"() => [{GRID_JS}.data[2].x[0], {GRID_JS}.data[2].y[0]]")
    assert selected == [target[1], target[0]]
    lab.screenshot("decomposition-01-head-selected")

    # Toggling an ablation changes the zero-shot readout.
    readout = page.locator(READOUT)
    before = readout.inner_text()
    toggle = explorer.locator(f".csw-attn-{layers - 1}")
    toggle.click()
    page.wait_for_function("([sel, old]) => document.querySelector(sel).innerText !== old",
                           arg=[READOUT, before], timeout=30_000)
    after = readout.inner_text()
    assert "attention" in after and str(layers - 1) in after.split("mean-ablation of")[1]
    assert "active" in (toggle.get_attribute("class") or "") or toggle.get_attribute("aria-pressed") == "true"
    explorer.scroll_into_view_if_needed()
    lab.screenshot("decomposition-02-ablated")
    explorer.screenshot(path=str(ARTIFACTS / "decomposition-explorer.png"))
