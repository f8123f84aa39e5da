"""Front-ends other than JupyterLab: the quickstart notebook in Notebook 7 (`jupyter notebook`), then as
nbconvert HTML.

Notebook 7: run the notebook, use the explorer (label edit, hover, click). Then save it from there,
export it with nbconvert's HTML exporter and open the page without a kernel: the explorer's output
shows as its static picture.

Notebook 7 is built from JupyterLab's components (same menus, cells, kernel indicator and widget
managers), so the `Lab` helpers drive it; what differs is the server (`python -m notebook`) and the
page (`/notebooks/PATH`, one document per browser tab). The server gets its own private dirs, a
token, loopback only, and is stopped by its PID, like the JupyterLab one in conftest.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from conftest import PLOT_STATE_JS, REPO, Lab, LabServer, _unavailable, hover_over, running_server

pytestmark = pytest.mark.e2e

EXPLORER_PLOT = ".clipsurgery-widget .csw-plot"
BARS_JS = "document.querySelector('.clipsurgery-widget .csw-bars .js-plotly-plot')"


@dataclass
class NotebookServer(LabServer):
    def lab_url(self, path: str) -> str:
        """Notebook 7's page for one notebook (the `Lab` helpers call this to open a path)."""
        return f"{self.url}/notebooks/{path}?token={self.token}"


@pytest.fixture(scope="module")
def notebook7_server(chromium_path, tmp_path_factory) -> NotebookServer:
    try:
        import notebook
    except ImportError:
        _unavailable("the notebook package (Notebook 7) is not installed (pip install -e '.[test]').")
    if int(notebook.__version__.split(".")[0]) < 7:
        _unavailable(f"notebook {notebook.__version__} is installed; these tests need Notebook 7.")
    # (Its settings, like Lab's, keep every cell rendered: Notebook 7 shares Lab's windowing.)
    with running_server("notebook", tmp_path_factory.mktemp("notebook7"), NotebookServer) as server:
        yield server


def plot_state(page) -> dict:
    return page.evaluate(PLOT_STATE_JS, EXPLORER_PLOT)


def shown_heat_maps(state: dict) -> list[dict]:
    """The visible heat-map traces of the explorer's plot that hold data."""
    return [t for plot in state["plots"] for t in plot["traces"]
            if t["type"] == "heatmap" and t["visible"] is True and t["n"] > 0]


def wait_for_state_change(page, before: dict, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = plot_state(page)
        if shown_heat_maps(state) and [t["sum"] for t in shown_heat_maps(state)] != \
                [t["sum"] for t in shown_heat_maps(before)]:
            return state
        time.sleep(0.25)
    raise AssertionError(f"the heat map did not change within {timeout:.0f} s")


def test_quickstart_in_notebook7_then_as_nbconvert_html(page, notebook7_server):
    console = []  # browser console errors, shown when a check fails
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
    nb = Lab(page, notebook7_server)
    nb.open("notebooks/01_quickstart.ipynb")
    # Notebook 7's own page (not JupyterLab's): one document, no Lab dock panel or file browser.
    assert "/notebooks/notebooks/01_quickstart.ipynb" in page.url
    assert page.locator("#main-panel").count() == 1 and page.locator("#jp-main-dock-panel").count() == 0
    assert page.locator(".jp-NotebookPanel").count() == 1
    nb.run_all()
    assert nb.error_outputs() == []
    nb.wait_for_widgets()

    explorer = page.locator(".clipsurgery-widget", has=page.locator(".csw-labels input")).first
    explorer.scroll_into_view_if_needed()
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    one_label = explorer.locator(".csw-view button", has_text="one label")
    if one_label.count():
        one_label.first.click()
    page.wait_for_function("(sel) => document.querySelector(sel + ' .js-plotly-plot')", arg=EXPLORER_PLOT)
    deadline = time.monotonic() + 30
    while not shown_heat_maps(before := plot_state(page)) and time.monotonic() < deadline:
        time.sleep(0.25)
    heat = shown_heat_maps(before)
    assert heat, f"no heat map with data in the explorer's plot: {before}; console: {console[-10:]}"
    assert heat[0]["n"] >= 14 * 14 and heat[0]["sum"] != 0, heat[0]
    nb.screenshot("notebook7-01-after-run")

    # A label edit: multi-label surgery changes every map, so the shown map's data must change.
    labels_box = explorer.locator(".csw-labels input")
    original = labels_box.input_value()
    labels_box.fill(original + ", dog")
    labels_box.press("Enter")
    wait_for_state_change(page, before)
    assert "dog" in explorer.locator(".csw-label select").inner_text()

    # A click on the map shows the per-label bars for that patch.
    box = explorer.locator(".csw-plot .nsewdrag").first.bounding_box()
    hover = hover_over(page, box, 0.3, 0.4)
    assert hover.text_content().strip()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    page.wait_for_function(f"() => {BARS_JS} && {BARS_JS}.data[0].y && {BARS_JS}.data[0].y.length > 0",
                           timeout=60_000)
    bars = page.evaluate(f"() => ({{x: {BARS_JS}.data[0].x, n: {BARS_JS}.data[0].y.length, "
                         f"height: {BARS_JS}.getBoundingClientRect().height}})")
    labels = [t.strip() for t in (original + ", dog").split(",")]
    assert list(bars["x"]) == labels and bars["n"] == len(labels), bars
    assert bars["height"] > 50, "the bar chart is not visible"
    explorer.scroll_into_view_if_needed()
    nb.screenshot("notebook7-02-clicked")
    explorer.screenshot(path=str(REPO / "test-artifacts" / "notebook7-explorer.png"))

    # Save from Notebook 7, export with nbconvert, and look at the page as a reader without a kernel.
    saved = notebook7_server.root / "notebooks" / "01_quickstart.ipynb"
    before_save = saved.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while saved.stat().st_mtime_ns == before_save and time.monotonic() < deadline:
        time.sleep(0.25)
    assert saved.stat().st_mtime_ns != before_save, "Notebook 7 did not save the notebook"
    html_path = export_html(saved)
    page.goto(html_path.as_uri())
    cell = page.locator(".jp-Cell", has_text="HeatmapExplorer(explainer").first
    picture = cell.locator(".jp-OutputArea-output img").first
    picture.wait_for(timeout=30_000)
    size = picture.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert size[0] and size[1] >= 300 and size[2] >= 200, size
    assert cell.locator("script[type='application/vnd.jupyter.widget-view+json']").count() == 0
    cell.screenshot(path=str(REPO / "test-artifacts" / "nbconvert-html-explorer.png"))


def export_html(notebook_path):
    """nbconvert's HTML export of a saved notebook (as `jupyter nbconvert --to html` writes it)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    out = notebook_path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out
