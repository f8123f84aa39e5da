"""The dense-methods lesson (notebooks/06) in a real JupyterLab and Chromium: it runs, its two live
widgets show every method's attention panels and the methods grid, and a click still answers."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

WIDGETS = ".clipsurgery-widget"


def titles(page, index: int) -> list[str]:
    """Panel titles of the ``index``-th widget's main plot, as the browser draws them."""
    return page.evaluate("""(i) => {
        const plot = document.querySelectorAll('.clipsurgery-widget')[i].querySelector('.js-plotly-plot');
        return plot ? Array.from(plot.querySelectorAll('.annotation-text')).map(n => n.textContent) : [];
    }""", index)


def test_methods_lesson_runs_and_its_widgets_answer(lab):
    page = lab.page
    lab.open("notebooks/06_methods_compared.ipynb")
    lab.run_all(timeout=300.0)
    assert lab.error_outputs() == []
    lab.wait_for_widgets(count=2, timeout=120_000)
    page.wait_for_function("() => !document.querySelector('.clipsurgery-widget .csw-status .csw-spinner')",
                           timeout=120_000)

    # The attention explorer: one panel per method's attention (titles name the methods).
    page.wait_for_function("""() => {
        const plot = document.querySelectorAll('.clipsurgery-widget')[0].querySelector('.js-plotly-plot');
        const text = plot ? plot.textContent : '';
        return ['ClearCLIP', 'SCLIP', 'NACLIP', 'GEM'].every(name => text.includes(name));
    }""", timeout=120_000)
    attention_titles = " ".join(titles(page, 0))
    for name in ("q-k", "v-v", "ClearCLIP", "SCLIP", "NACLIP", "GEM"):
        assert name in attention_titles, (name, attention_titles)

    # The heat-map explorer in its methods view: labels x methods panels.
    page.wait_for_function("""() => {
        const plot = document.querySelectorAll('.clipsurgery-widget')[1].querySelector('.js-plotly-plot');
        return plot && plot.querySelectorAll('.annotation-text').length >= 16;
    }""", timeout=120_000)
    grid = titles(page, 1)
    assert grid[:4] == ["raw CLIP: coffee cup", "CLIP Surgery: coffee cup", "SCLIP: coffee cup", "NACLIP: coffee cup"]
    assert len(grid) == 16

    # A click on a panel of the methods grid answers with that method's scores.
    explorer = page.locator(WIDGETS).nth(1)
    explorer.scroll_into_view_if_needed()
    drag = explorer.locator(".csw-plot .draglayer .x3y3 .nsewdrag")
    box = drag.bounding_box()
    assert box is not None and box["width"] > 20
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("""() => {
        const bars = document.querySelectorAll('.clipsurgery-widget')[1].querySelector('.csw-bars .js-plotly-plot');
        return bars && bars.layout && bars.layout.title.text.startsWith('SCLIP');
    }""", timeout=60_000)
    lab.screenshot("methods-notebook")
