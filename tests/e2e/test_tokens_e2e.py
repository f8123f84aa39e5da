"""The multimodal notebook in a real JupyterLab and Chromium: type captions, click chips and the image.

Also checks that a script-injection caption shows as text and runs nothing.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import hover_over

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
    lab.open("notebooks/02_multimodal_tokens.ipynb")
    lab.run_all()
    assert lab.error_outputs() == []
    lab.wait_for_widgets()
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
                 ["<", "img", "src", "=", "x", "on", "error", "=", "alert", "(", "1", ")", ">"])
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
