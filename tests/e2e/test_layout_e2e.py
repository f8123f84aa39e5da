"""Every widget fits its notebook cell at window widths of 1000 and 1600 px (JupyterLab, file panel open).

One generated notebook shows a widget of each kind on the tiny models. At each width, per widget:
its box and every plot inside its output cell, no element scrolling sideways (scrollWidth <=
clientWidth + 1), the plotly toolbar (modebar) overlapping no panel title, and HeatmapExplorer's
4-label grid laid out 2x2. All problems are collected, written to test-artifacts/layout-report.json
and reported together, per widget and width.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import EVERY_WIDGET_SETUP, save_screenshot, widget_fit, write_notebook

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WIDTHS = (1000, 1600)
CASES = ("heatmap-grid", "tokens", "attention", "side-by-side", "decomposition", "sam")

CELLS = [
    EVERY_WIDGET_SETUP,
    'tagged(HeatmapExplorer(explainer, cat, labels=["cat", "sofa", "floor", "wall"], view="grid"), "heatmap-grid")',
    'tagged(TokenExplorer(explainer, cat, caption="a close-up of a tabby cat on a sofa"), "tokens")',
    'tagged(AttentionExplorer(explainer, cat), "attention")',
    'tagged(SideBySide(HeatmapExplorer(explainer, cat, labels=["cat", "sofa"], view="compare", label="cat"),'
    ' AttentionExplorer(explainer, cat)), "side-by-side")',
    'tagged(DecompositionExplorer(explainer, [cat, sample_image("astronaut")], texts=["a cat", "a dog", "a person",'
    ' "grass"], labels=["cat", "person"]), "decomposition")',
    'tagged(SamWidget(explainer, load_sam_from_env(), cat, text="cat"), "sam")',
]

GRID_SHAPE_JS = r"""(selector) => {
    const gd = document.querySelector(selector + ' .csw-plot .js-plotly-plot');
    if (!gd) return null;
    const heat = Array.from(gd.querySelectorAll('.nsewdrag')).map(d => d.getBoundingClientRect())
        .filter(r => r.width > 20 && r.height > 20);
    const cols = new Set(heat.map(r => Math.round(r.left / 5))), rows = new Set(heat.map(r => Math.round(r.top / 5)));
    return {panels: heat.length, columns: cols.size, rows: rows.size};
}"""


def wait_until_drawn(page, case: str, timeout: float = 120.0) -> None:
    page.wait_for_function("(sel) => { const el = document.querySelector(sel);"
                           " return !!el && el.querySelectorAll('.js-plotly-plot .main-svg').length > 0"
                           " && !el.querySelector('.csw-spinner'); }",
                           arg=f".csw-case-{case}", timeout=timeout * 1000)


def test_every_widget_fits_its_cell_at_two_widths(lab, lab_server):
    page = lab.page
    path = write_notebook(lab_server, "layout_every_widget.ipynb", CELLS)
    started = time.monotonic()
    lab.open(path)
    lab.run_all(timeout=400)
    assert lab.error_outputs() == []
    for case in CASES:
        wait_until_drawn(page, case)
    report: dict = {"run_all_s": round(time.monotonic() - started, 1), "problems": {}, "grid": {}}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        time.sleep(2.5)  # plotly redraws after the resize settles
        for case in CASES:
            page.locator(f".csw-case-{case}").first.scroll_into_view_if_needed()
            time.sleep(0.3)
            problems = widget_fit(page, f".csw-case-{case}", controls=False)["problems"]
            if problems:
                report["problems"][f"{case} @ {width}px"] = problems
        grid = page.evaluate(GRID_SHAPE_JS, ".csw-case-heatmap-grid")
        report["grid"][width] = grid
        if grid != {"panels": 4, "columns": 2, "rows": 2}:
            report["problems"].setdefault(f"heatmap-grid @ {width}px", []).append(f"4-label grid laid out as {grid}")
        save_screenshot(page, f"layout-{width}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "layout-report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    assert not report["problems"], json.dumps(report["problems"], indent=1)
