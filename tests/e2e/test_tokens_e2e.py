"""The multimodal notebook in a real JupyterLab and Chromium: type captions, click chips and the image.

Also checks that a script-injection caption shows as text and runs nothing, that the explorer fits
its cell at 1000 and 1600 px wide, and that it shows the same state after a page reload (the kernel
still running) and still answers clicks.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NOTEBOOK, hover_over

from clipsurgery_widgets.widgets import plotting

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
EXPLORER = ".clipsurgery-widget >> nth=0"
PLOT_JS = "document.querySelector('.clipsurgery-widget .csw-plot .js-plotly-plot')"
HEAT = plotting.HEAT_TRACE  # trace index of the first panel's heat map
INJECTION = "<img src=x onerror=alert(1)>"


def heat_sum(page) -> float | None:
    return page.evaluate(f"""() => {{
        const z = {PLOT_JS}.data[{HEAT}].z;
        if (!z) return null;
        let total = 0; for (const row of z) for (const v of row) total += v;
        return total;
    }}""")


def chip_texts(explorer) -> list[str]:
    return [t.strip() for t in explorer.locator(".csw-chips .csw-chip").all_text_contents()]


def type_caption(page, explorer, caption: str, expected_chips: list[str]) -> None:
    box = explorer.locator(".csw-caption input")
    box.fill(caption)
    box.press("Enter")
    page.wait_for_function(
        "(want) => JSON.stringify(Array.from(document.querySelectorAll('.clipsurgery-widget .csw-chips .csw-chip'))"
        ".map(n => n.textContent.trim())) === JSON.stringify(want)", arg=expected_chips, timeout=30_000)
    page.wait_for_function("() => !document.querySelector('.clipsurgery-widget .csw-status .csw-spinner')")


def test_token_explorer_in_browser(lab):
    page = lab.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    lab.run_notebook("notebooks/02_multimodal_tokens.ipynb")
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()
    assert explorer.locator(".csw-error").inner_text().strip() == ""

    # Type a caption: one chip per token (punctuation shown, start/end hidden by default).
    type_caption(page, explorer, "A cat lying on a soft sofa.", ["A", "cat", "lying", "on", "a", "soft", "sofa", "."])
    marked = explorer.locator(".csw-chips .csw-chip").evaluate_all(
        "nodes => nodes.filter(n => getComputedStyle(n).backgroundColor !== 'rgb(238, 238, 238)').length")
    assert marked == 3  # the paper's top three: red, yellow, cyan
    tooltip = explorer.locator(".csw-chip", has_text="sofa").get_attribute("title")
    assert "score" in tooltip and "rank" in tooltip
    page.wait_for_function(f"() => {PLOT_JS}.data[{HEAT}].z !== null && {PLOT_JS}.data[{HEAT}].z !== undefined")
    caption_heat = heat_sum(page)
    lab.screenshot("tokens-01-caption")

    # Clicking a chip shows that token's map.
    explorer.locator(".csw-chip", has_text="cat").click()
    page.wait_for_function(f"(before) => {{ const z = {PLOT_JS}.data[{HEAT}].z; let t = 0;"
                           "for (const r of z) for (const v of r) t += v; return Math.abs(t - before) > 1e-6; }",
                           arg=caption_heat, timeout=30_000)
    page.wait_for_function(f"() => {PLOT_JS}.layout.annotations[0].text.includes('cat')")

    # Clicking the image ranks the tokens at that patch.
    drag = explorer.locator(".csw-plot .nsewdrag").first
    box = drag.bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
    hover = hover_over(page, box, 0.3, 0.4)  # plotly reports a click on the points it is hovering: hover first
    assert "raw score" in hover.text_content()
    page.mouse.click(x, y)
    explorer.locator(".csw-token-info", has_text="at patch (row").wait_for(timeout=30_000)
    lab.screenshot("tokens-02-clicked")

    # Start/end toggle adds two chips.
    explorer.locator(".csw-special input").check()
    page.wait_for_function("() => document.querySelectorAll('.clipsurgery-widget .csw-chips .csw-chip').length === 10")

    # A script-injection caption is shown as text and runs nothing.
    explorer.locator(".csw-special input").uncheck()
    type_caption(page, explorer, INJECTION,
                 ["<", "img", "src", "=", "x", "onerror", "=", "alert", "(", "1", ")>"])  # one chip per word
    explorer.locator(".csw-chip", has_text="<").first.click()
    page.wait_for_function(f"() => {PLOT_JS}.layout.annotations[0].text.includes('&lt;')")
    page.wait_for_timeout(1000)  # give any injected handler time to fire
    injected = page.evaluate("() => document.querySelectorAll('.clipsurgery-widget img[src=\"x\"]').length")
    assert injected == 0
    assert dialogs == []
    shown_title = explorer.locator(".csw-plot .annotation-text").first.text_content()
    assert "<" in shown_title  # the title reads as typed
    assert explorer.locator(".csw-error").inner_text().strip() == ""
    explorer.scroll_into_view_if_needed()
    lab.screenshot("tokens-03-injection")
    explorer.screenshot(path=str(ARTIFACTS / "tokens-explorer.png"))



WIDTHS = (1000, 1600)
# Boxes that must lie inside the output cell (plot, its colour bar, chips, controls).
LAYOUT_JS = """(sel) => {
    const root = document.querySelector(sel);
    const out = (root.closest('.jp-OutputArea-output') || root.parentElement).getBoundingClientRect();
    const name = (el) => (el.getAttribute('class') || el.tagName).split(' ').filter(c => c.startsWith('csw-')
        || ['main-svg', 'colorbar', 'cbaxis'].includes(c)).join('.') || el.tagName;
    const outside = [];
    for (const el of root.querySelectorAll('.csw-plot, .csw-plot .main-svg, .csw-plot .colorbar, .csw-chips,'
                                           + ' .csw-caption, .csw-score, .csw-marking, .csw-opacity, .csw-depth,'
                                           + ' .csw-whole, .csw-token-info')) {
        const b = el.getBoundingClientRect();
        if (b.width > 0 && (b.left < out.left - 1 || b.right > out.right + 1))
            outside.push(`${name(el)} ${Math.round(b.left)}..${Math.round(b.right)}`);
    }
    const scrolling = [root, ...root.querySelectorAll('.widget-box, .csw-plot')]
        .filter(el => el.scrollWidth > el.clientWidth + 1)
        .map(el => `${name(el)} ${el.scrollWidth} > ${el.clientWidth}`);
    const svg = root.querySelector('.csw-plot .main-svg').getBoundingClientRect();
    return {outside, scrolling, cell: [Math.round(out.left), Math.round(out.right)],
            plot: Math.round(svg.width), box: Math.round(root.querySelector('.csw-plot').getBoundingClientRect().width)};
}"""


def check_layout(page, width: int) -> dict:
    """At a window ``width``: the plot redrawn at its box's width, every box inside the cell, no scrollbars."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_function(  # plotly redraws at the new container width
        "() => { const box = document.querySelector('.clipsurgery-widget .csw-plot');"
        " const svg = box && box.querySelector('.main-svg');"
        " return !!svg && Math.abs(svg.getBoundingClientRect().width - box.getBoundingClientRect().width) <= 2; }",
        timeout=15_000)
    page.wait_for_timeout(300)
    found = page.evaluate(LAYOUT_JS, EXPLORER.split(" >> ")[0])
    page.locator(EXPLORER).screenshot(path=str(ARTIFACTS / f"tokens-width-{width}.png"))
    print(f"window {width} px: {found}")
    assert found["outside"] == [] and found["scrolling"] == [], (width, found)
    return found


def chip_tooltip(explorer, text: str) -> str:
    return explorer.locator(".csw-chip", has_text=text).first.get_attribute("title")


def plot_title(page) -> str:
    return page.evaluate(f"() => {PLOT_JS}.layout.annotations[0].text")


def test_token_explorer_fits_and_survives_a_reload(lab):
    page = lab.page
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    lab.run_notebook("notebooks/02_multimodal_tokens.ipynb")
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()

    # One chip per word: "whiskers" is one chip, its BPE pieces on hover.
    type_caption(page, explorer, "A cat with whiskers on a sofa.", ["A", "cat", "with", "whiskers", "on", "a",
                                                                    "sofa", "."])
    tooltip = chip_tooltip(explorer, "whiskers")
    assert "whis · kers" in tooltip and "mean of its BPE pieces" in tooltip, tooltip

    # The layout rule at two window widths (the file browser open, as by default).
    sizes = {width: check_layout(page, width) for width in WIDTHS}
    assert sizes[1600]["plot"] > sizes[1000]["plot"], sizes  # the map follows its column
    page.set_viewport_size({"width": 1400, "height": 1000})
    explorer.scroll_into_view_if_needed()

    # Interact: a word's map, then the words ranked at a clicked patch.
    explorer.locator(".csw-chip", has_text="whiskers").click()
    page.wait_for_function(f"() => {PLOT_JS}.layout.annotations[0].text.includes('whiskers')")
    drag = explorer.locator(".csw-plot .nsewdrag").first
    box = drag.bounding_box()
    hover = hover_over(page, box, 0.3, 0.4)
    assert "whiskers" in hover.text_content()  # the hover names the word whose map is shown
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    explorer.locator(".csw-reranked", has_text="ranked at the clicked patch").wait_for(timeout=30_000)
    page.wait_for_function("() => !document.querySelector('.clipsurgery-widget .csw-status .csw-spinner')")
    page.wait_for_timeout(500)
    before = {"heat": heat_sum(page), "title": plot_title(page), "tooltip": chip_tooltip(explorer, "sofa")}
    assert "at the clicked patch" in before["tooltip"]

    # Save, reload the page (the kernel keeps running; no cell runs again).
    lab.save()
    errors.clear()
    page.reload()
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
    lab.wait_for_kernel_idle()
    lab.dismiss_dialogs()
    lab.wait_for_widgets()
    explorer = page.locator(EXPLORER)
    explorer.scroll_into_view_if_needed()
    page.wait_for_function(f"(title) => {PLOT_JS}.layout.annotations[0].text === title && "
                           f"{PLOT_JS}.data[{HEAT}].z", arg=before["title"], timeout=30_000)
    after = {"heat": heat_sum(page), "title": plot_title(page), "tooltip": chip_tooltip(explorer, "sofa")}
    assert after == before
    assert explorer.locator(".csw-reranked").is_visible()
    lab.screenshot("tokens-04-reloaded")

    # Still answers: a chip shows its map, "back to whole-image ranking" hides the line.
    explorer.locator(".csw-chip", has_text="sofa").click()
    page.wait_for_function(f"() => {PLOT_JS}.layout.annotations[0].text.includes('sofa')", timeout=30_000)
    assert abs(heat_sum(page) - before["heat"]) > 1e-6
    explorer.locator(".csw-unrank").click()
    explorer.locator(".csw-reranked").wait_for(state="hidden", timeout=30_000)
    model_errors = [e for e in errors if "initialize" in e.lower() or "model not found" in e.lower()]
    assert model_errors == [], errors
