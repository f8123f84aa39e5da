"""The q-k vs v-v lesson notebook in a real JupyterLab and Chromium: click a patch, move the layer slider,
then show the attention every dense method uses and click a patch again."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import hover_over

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
EXPLORER = ".csw-attention-explorer >> nth=0"
PLOT_JS = "document.querySelector('.csw-attention-explorer .csw-plot .js-plotly-plot')"


def view_state(page) -> dict:
    """The three map panels as the browser has them: heat data of q-k and v-v, the query outline."""
    return page.evaluate(f"""() => {{
        const gd = {PLOT_JS};
        const heats = gd.data.filter(t => t.name === 'heat');
        const boxes = gd.data.filter(t => t.name === 'query');
        return {{qk: JSON.stringify(heats[1].z), vv: JSON.stringify(heats[2].z),
                 box: JSON.stringify([Array.from(boxes[0].x || []), Array.from(boxes[0].y || [])]),
                 title: gd.layout.annotations[0].text}};
    }}""")


def wait_for_new_view(page, before: dict, keys: tuple[str, ...]) -> dict:
    page.wait_for_function(f"""(args) => {{
        const [before, keys] = args;
        const gd = {PLOT_JS};
        const heats = gd.data.filter(t => t.name === 'heat');
        const boxes = gd.data.filter(t => t.name === 'query');
        const now = {{qk: JSON.stringify(heats[1].z), vv: JSON.stringify(heats[2].z),
                     box: JSON.stringify([Array.from(boxes[0].x || []), Array.from(boxes[0].y || [])])}};
        return keys.every(k => now[k] !== before[k]);
    }}""", arg=[before, list(keys)], timeout=30_000)
    return view_state(page)


def wait_until_interactive(page, timeout_ms: float = 30_000) -> None:
    """Wait until plotly has wired up the plot's click events (it does so when its first draw is done).

    A click before that reaches no Python callback. (With the photo as a go.Image trace, an update
    arriving during the first draw could keep that from ever happening; see AttentionFigure.)
    """
    listening = f"() => {{ const ev = {PLOT_JS}._ev; return !!(ev && ev._events && ev._events.plotly_click); }}"
    page.wait_for_function(listening, timeout=timeout_ms)


def test_attention_explorer_in_browser(lab):
    page = lab.page
    lab.open("notebooks/03_attention_qk_vs_vv.ipynb")
    lab.run_all()
    assert lab.error_outputs() == []
    lab.wait_for_widgets(".csw-attention-explorer .js-plotly-plot")
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()
    page.wait_for_function(f"() => {PLOT_JS}.data.filter(t => t.name === 'heat')[1].z")
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    before = view_state(page)
    lab.screenshot("attention-01-after-run")

    wait_until_interactive(page)

    # Click a patch of the image panel (the first subplot): hover first, as a person does.
    drag = explorer.locator(".csw-plot .nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    x, y = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.8
    hover = hover_over(page, box, 0.2, 0.8)
    assert "row" in hover.text_content() and "col" in hover.text_content()
    page.mouse.click(x, y)
    clicked = wait_for_new_view(page, before, ("box", "qk", "vv"))
    assert clicked["title"] != before["title"]
    query_text = explorer.locator(".csw-query-text").inner_text()
    assert "query (row" in query_text and query_text.split("query ")[1] in clicked["title"]
    # The marker sits where the click was: the lower-left part of the image.
    outline = page.evaluate(f"""() => {{
        const gd = {PLOT_JS}, b = gd.data.filter(t => t.name === 'query')[0];
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        return {{x: (Math.min(...b.x) + Math.max(...b.x)) / 2, y: (Math.min(...b.y) + Math.max(...b.y)) / 2,
                 xr: xa.range, yr: ya.range}};
    }}""")
    width, height = outline["xr"][1] - outline["xr"][0], outline["yr"][0] - outline["yr"][1]
    assert 0.05 < (outline["x"] - outline["xr"][0]) / width < 0.35
    assert 0.65 < (outline["y"] - outline["yr"][1]) / height < 0.95
    lab.screenshot("attention-02-clicked")

    # Move the layer slider one step (the notebook left it on the last layer): both maps change again.
    handle = explorer.locator(".csw-layer .noUi-handle")
    layer_before = explorer.locator(".csw-layer .widget-readout").inner_text()
    handle.focus()
    handle.press("ArrowLeft")
    moved = wait_for_new_view(page, clicked, ("qk", "vv"))
    assert moved["box"] == clicked["box"]  # same query
    assert explorer.locator(".csw-layer .widget-readout").inner_text() != layer_before
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    explorer.scroll_into_view_if_needed()
    lab.screenshot("attention-03-layer-moved")
    explorer.screenshot(path=str(ARTIFACTS / "attention-explorer.png"))


    # Show the attention every dense method uses: the view is rebuilt with eight map panels in two rows.
    explorer.locator(".csw-all-kinds").click()
    page.wait_for_function(f"""() => {{
        const gd = {PLOT_JS};
        const heats = gd && gd.data ? gd.data.filter(t => t.name === 'heat') : [];
        return heats.length === 8 && heats.every(t => t.z);
    }}""", timeout=60_000)
    titles = page.evaluate(f"() => {PLOT_JS}.layout.annotations.slice(0, 8).map(a => a.text)")
    for first, method in [("q-k attention", "raw CLIP"), ("v-v attention", "CLIP Surgery"),
                          ("q-q attention", "ClearCLIP"), ("k-k attention", "NACLIP, no Gaussian"),
                          ("q-q + k-k attention", "SCLIP, ÷ 2"), ("k-k + Gaussian attention", "NACLIP"),
                          ("GEM self-self attention", "GEM")]:
        assert any(t.startswith(first) and f"<br>{method} · block" in t for t in titles), (first, titles)
    for kind in ("qq", "kk", "qq-kk", "kk-gauss", "gem"):  # their toggles are on
        assert "mod-active" in (explorer.locator(f".csw-kind-{kind}").get_attribute("class") or "")
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    wait_until_interactive(page)
    panels_before = map_boxes(page)
    assert len(panels_before) == 8 and len(set(panels_before)) == 1  # one marker, in every map panel

    # Click a patch of the image panel (upper right this time): the marker moves in all eight panels.
    drag = explorer.locator(".csw-plot .nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    x, y = box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.2
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(f"""(before) => {{
        const gd = {PLOT_JS};
        const boxes = gd.data.filter(t => t.name === 'query').slice(0, 8);
        return boxes.every(b => JSON.stringify([Array.from(b.x || []), Array.from(b.y || [])]) !== before);
    }}""", arg=panels_before[0], timeout=30_000)
    panels_after = map_boxes(page)
    assert len(set(panels_after)) == 1 and panels_after[0] != panels_before[0]
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    explorer.scroll_into_view_if_needed()
    lab.screenshot("attention-04-every-method")
    explorer.screenshot(path=str(ARTIFACTS / "attention-explorer-methods.png"))


def map_boxes(page) -> list[str]:
    """The query outline of each map panel (the first eight 'query' traces), as JSON strings."""
    return page.evaluate(f"""() => {PLOT_JS}.data.filter(t => t.name === 'query').slice(0, 8)
        .map(b => JSON.stringify([Array.from(b.x || []), Array.from(b.y || [])]))""")
