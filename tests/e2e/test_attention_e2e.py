"""The q-k vs v-v lesson notebook in a real JupyterLab and Chromium: click a patch, move the layer slider,
then show the attention every dense method uses and click a patch again."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import PLOT_STATE_JS, hover_over, write_notebook

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
    lab.run_notebook("notebooks/03_attention_qk_vs_vv.ipynb", ".csw-attention-explorer .js-plotly-plot")
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


# --- fitting the cell, at two window widths ------------------------------------------------------

LESSON = "notebooks/03_attention_qk_vs_vv.ipynb"
MIN_PANE_WIDTH = 520  # clipsurgery_widgets.widgets.side_by_side.MIN_PANE_WIDTH (no package import in e2e)

# Boxes (page pixels) of the side-by-side, its panes, widgets, plots, the drawn plot surfaces and controls,
# with the output cell's box and whether each box scrolls sideways; plus where the attention plot draws its
# v-v panel, its colour bar, its toolbar and its titles.
BOXES_JS = r"""() => {
    const pair = document.querySelector('.csw-side-by-side');
    const cell = pair.closest('.jp-OutputArea-output');
    const box = (el) => { const r = el.getBoundingClientRect();
        return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; };
    const scrolls = (el) => el.scrollWidth > el.clientWidth + 1;
    const named = (sel, what) => Array.from(pair.querySelectorAll(sel)).filter(el => el.offsetParent !== null)
        .map(el => Object.assign(box(el), {what: what, scrolls: scrolls(el),
                                           attention: !!(el.closest('.csw-attention-explorer')
                                                         || el.querySelector(':scope > .csw-attention-explorer'))}));
    const boxes = [Object.assign(box(pair), {what: 'side-by-side', scrolls: scrolls(pair)}),
        ...named('.csw-side-by-side-pane', 'pane'), ...named('.clipsurgery-widget', 'widget'),
        ...named('.js-plotly-plot', 'plot'), ...named('.js-plotly-plot .main-svg', 'plot surface'),
        ...named('.widget-inline-hbox, .widget-button, .widget-toggle-button, .widget-upload, .widget-dropdown',
                 'control')];
    const gd = pair.querySelector('.csw-attention-explorer .js-plotly-plot');
    const g = box(gd), full = gd._fullLayout;
    const axisBox = (n) => {
        const xa = full[n ? `xaxis${n + 1}` : 'xaxis'], ya = full[n ? `yaxis${n + 1}` : 'yaxis'];
        return {left: g.left + xa._offset, right: g.left + xa._offset + xa._length, top: g.top + ya._offset,
                bottom: g.top + ya._offset + ya._length, width: xa._length, height: ya._length}; };
    const bar = gd.querySelector('.colorbar');
    const modebar = gd.querySelector('.modebar');
    return {cell: box(cell), cellScrolls: scrolls(cell), boxes: boxes,
            panes: named('.csw-side-by-side-pane', 'pane'),
            attention: g, plotWidth: full.width, vv: axisBox(2), layer0: axisBox(3), colorbar: bar ? box(bar) : null,
            modebar: modebar ? box(modebar) : null,
            titles: Array.from(gd.querySelectorAll('.annotation'))
                .map(a => Object.assign(box(a), {text: a.textContent}))};
}"""

# The attention figure has been drawn again at its pane's width (the other pane's figures are checked by their
# boxes below).
SETTLED_JS = """() => {
    const gd = document.querySelector('.csw-side-by-side .csw-attention-explorer .js-plotly-plot');
    const full = gd && gd._fullLayout;
    return !!(full && full.xaxis4 && gd.querySelector('.colorbar')
              && Math.abs(full.width - gd.getBoundingClientRect().width) <= 1);
}"""


def test_the_lesson_fits_the_cell_at_1000_and_1600_px(lab):
    """SideBySide in notebook 03: figures follow their pane (also when drawn out of view), panes stack when the
    cell has no room for both, nothing sticks out of the cell or scrolls sideways; the every-layer grid's hover
    names row, column and probability; a colour bar beside the maps; the toolbar over no title."""
    page = lab.page
    page.set_viewport_size({"width": 1000, "height": 1000})  # the side-by-side is drawn out of view at this width
    lab.open(LESSON)
    lab.run_all()
    assert lab.error_outputs() == []
    lab.wait_for_widgets(".csw-side-by-side .js-plotly-plot", 2)
    other_pane = []
    for width in (1000, 1600):
        page.set_viewport_size({"width": width, "height": 1000})
        pair = page.locator(".csw-side-by-side").first
        pair.scroll_into_view_if_needed()
        page.wait_for_function(SETTLED_JS, timeout=30_000)
        page.wait_for_timeout(500)
        facts = page.evaluate(BOXES_JS)
        cell = facts["cell"]
        lab.screenshot(f"attention-side-by-side-{width}")
        for box in facts["boxes"]:
            problem = None
            if not (cell["left"] - 1 <= box["left"] and box["right"] <= cell["right"] + 1):
                problem = (width, box["what"], "outside the cell", box, cell)
            elif box["scrolls"]:
                problem = (width, box["what"], "scrolls sideways", box)
            # The heat-map pane's figure is the heat-map explorer's: collected, reported after the rest.
            assert problem is None or not box["attention"], problem
            if problem:
                other_pane.append(problem)
        if not other_pane:
            assert not facts["cellScrolls"], width
        first, second = facts["panes"]
        if cell["width"] < 2 * MIN_PANE_WIDTH:  # no room for both: one under the other, each the cell's width
            assert second["top"] >= first["bottom"] - 1 and second["width"] > 0.95 * cell["width"], (width, facts)
        else:
            assert abs(second["top"] - first["top"]) <= 1 and second["left"] >= first["right"] - 1, (width, facts)
        # The attention figure is drawn at its pane's width and its v-v map is on screen, inside the cell.
        assert abs(facts["plotWidth"] - facts["attention"]["width"]) <= 1
        vv = facts["vv"]
        assert vv["width"] > 60 and cell["left"] <= vv["left"] and vv["right"] <= cell["right"], (width, vv)
        # No empty band under the maps: the every-layer grid starts soon after the maps.
        assert facts["layer0"]["top"] - vv["bottom"] < 90, (width, vv, facts["layer0"])
        bar = facts["colorbar"]
        assert bar is not None and bar["left"] >= vv["right"] - 1 and bar["right"] <= facts["attention"]["right"] + 1
        assert bar["top"] < vv["bottom"] and bar["bottom"] > vv["top"]  # beside the maps
        # The toolbar (shown on hover) sits above the titles.
        page.mouse.move(facts["attention"]["left"] + 30, facts["attention"]["top"] + 60)
        page.wait_for_timeout(300)
        modebar = page.evaluate(BOXES_JS)["modebar"]
        if modebar and modebar["width"] > 0:
            for title in facts["titles"]:
                overlap = not (title["right"] <= modebar["left"] or modebar["right"] <= title["left"]
                               or title["bottom"] <= modebar["top"] or modebar["bottom"] <= title["top"])
                assert not overlap, (width, title, modebar)
        # Hover over the first small multiple (block 0, q-k): row, column and probability.
        layer0 = facts["layer0"]
        hover = hover_over(page, {"x": layer0["left"], "y": layer0["top"], "width": layer0["width"],
                                  "height": layer0["height"]}, 0.1, 0.1)
        text = hover.text_content()
        assert "row 0, col 0" in text and "probability 0." in text, text
        page.mouse.move(5, 5)
    assert not other_pane, other_pane  # the heat-map explorer's figure must follow its pane's width too


# --- a page reload while the kernel keeps running --------------------------------------------------

RELOAD_CELLS = [
    "from clipsurgery_widgets.engine import Explainer, load_model_from_env, sample_image\n"
    "from clipsurgery_widgets import AttentionExplorer\n"
    "attention = AttentionExplorer(Explainer(load_model_from_env()), sample_image('cat'))\n"
    "attention",
]


def test_the_attention_view_comes_back_after_a_page_reload(lab):
    page = lab.page
    lab.open(write_notebook(lab.server, "attention_reload.ipynb", RELOAD_CELLS))
    lab.run_all()
    assert lab.error_outputs() == []
    lab.wait_for_widgets(".csw-attention-explorer .js-plotly-plot")
    page.wait_for_function(f"() => {PLOT_JS}.data.filter(t => t.name === 'heat')[1].z")
    wait_until_interactive(page)
    before = view_state(page)
    drag = page.locator(EXPLORER).locator(".csw-plot .nsewdrag").first
    box = drag.bounding_box()
    hover_over(page, box, 0.25, 0.75)
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.75)
    clicked = wait_for_new_view(page, before, ("box", "qk", "vv"))
    query_text = page.locator(EXPLORER).locator(".csw-query-text").inner_text()
    shown = page.evaluate(PLOT_STATE_JS, ".csw-attention-explorer")["plots"]

    # Save (the reloaded page reads the notebook from disk), then reload; the kernel keeps running.
    lab.save()
    page.reload()
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=60_000)
    lab.dismiss_dialogs()
    lab.wait_for_widgets(".csw-attention-explorer .js-plotly-plot")
    page.wait_for_function(f"() => {PLOT_JS}.data.filter(t => t.name === 'heat')[1].z", timeout=60_000)
    after = view_state(page)
    assert after["title"] == clicked["title"]  # the image panel's title names the clicked query
    # Same traces (the marker, both maps, every layer, the charts) and titles as before the reload,
    # once the view has settled (it redraws from the kernel's figure right after its first drawing).
    deadline = time.monotonic() + 20
    while (now := page.evaluate(PLOT_STATE_JS, ".csw-attention-explorer")["plots"]) != shown \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert now == shown
    assert page.locator(EXPLORER).locator(".csw-query-text").inner_text() == query_text
    lab.screenshot("attention-05-after-reload")

    # It still answers a click.
    wait_until_interactive(page)
    drag = page.locator(EXPLORER).locator(".csw-plot .nsewdrag").first
    box = drag.bounding_box()
    hover_over(page, box, 0.75, 0.25)
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.25)
    again = wait_for_new_view(page, after, ("box", "qk", "vv"))
    assert again["title"] != after["title"]
    assert page.locator(EXPLORER).locator(".csw-query-text").inner_text() != query_text
