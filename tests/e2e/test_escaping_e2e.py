"""User text stays text in the browser: a label with markup and a plotly template in the heat-map
explorer's segmentation legend shows literally, with no element made from it (issue 16, item 10)."""
from __future__ import annotations

import nbformat
import pytest

pytestmark = pytest.mark.e2e

LABEL = "<b>x</b> %{customdata} $y$"
LEGEND_JS = "document.querySelector('.clipsurgery-widget .csw-plot .js-plotly-plot .legend')"
SOURCE = f"""\
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.engine.loading import load_model
from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer

explainer = Explainer(load_model("tiny-random-vit", device="cpu"), cache_dir=False)
# One label: every pixel is of that class, so the legend shows it.
HeatmapExplorer(explainer, sample_image("cat"), labels=[{LABEL!r}], view="segmentation")
"""


def test_segmentation_legend_shows_markup_as_text(lab):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, lab.server.root / "escaping.ipynb")
    lab.run_notebook("escaping.ipynb")
    page = lab.page
    page.wait_for_function(f"() => {LEGEND_JS} && {LEGEND_JS}.querySelectorAll('.legendtext').length > 0",
                           timeout=60_000)
    legend = page.evaluate(f"""() => {{
        const legend = {LEGEND_JS};
        return {{texts: Array.from(legend.querySelectorAll('.legendtext')).map(t => t.textContent),
                 elements: legend.querySelectorAll('b, a, i, br').length,
                 bold: legend.querySelectorAll('tspan[style*="bold"]').length,
                 math: legend.querySelectorAll('.legendtext [class*="math"], svg svg').length}};
    }}""")
    assert legend["texts"] == [LABEL], legend
    assert legend["elements"] == 0 and legend["bold"] == 0 and legend["math"] == 0, legend
    lab.screenshot("escaping-legend")
