"""The tutorial notebooks are lessons: learning goals, folded answers, a "What can go wrong" section,
and none of the statements found wrong when they were checked against the papers."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
LESSONS = ["01_quickstart", "02_multimodal_tokens", "03_attention_qk_vs_vv", "04_sam_refinement",
           "05_decomposition", "08_feature_surgery"]
# Claims that were wrong or unsupported: they must not come back, not even quoted.
WRONG_STATEMENTS = ["every map and number below is noise", "lying on a sofa", "holding a flag",
                    "a few hundred real images"]


def cells_text(path: Path) -> tuple[str, str]:
    """(all markdown, all cell sources) of a notebook, lower-cased, whitespace collapsed."""
    nb = nbformat.read(path, as_version=4)
    markdown = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    everything = " ".join(c.source for c in nb.cells)
    squash = lambda text: re.sub(r"\s+", " ", text).lower()  # noqa: E731
    return squash(markdown), squash(everything)


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_has_goals_folded_answers_and_pitfalls(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.exists(), f"{path} is missing"
    markdown, _ = cells_text(path)
    assert "learning goals" in markdown, f"{name}: no 'Learning goals'"
    folded = len(re.findall(r"<details>.*?</details>", markdown))
    assert folded >= 2, f"{name}: {folded} folded answers (<details>...</details>), need at least 2"
    assert re.search(r"#+ what can go wrong", markdown), f"{name}: no 'What can go wrong' section heading"
    assert "predict:" in markdown, f"{name}: no 'Predict:' cell before a key run"
    assert "takeaways" in markdown, f"{name}: no takeaways"


def test_wrong_statements_appear_in_no_notebook():
    notebooks = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    assert len(notebooks) >= len(LESSONS)
    found = [(path.name, phrase) for path in notebooks for phrase in WRONG_STATEMENTS
             if phrase in cells_text(path)[1]]
    assert not found, f"statements found wrong are back: {found}"


def test_run_sheet_names_every_notebook():
    sheet = (NOTEBOOK_DIR / "README.md").read_text().lower()
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        assert path.name.lower() in sheet, f"notebooks/README.md does not mention {path.name}"
    assert "90-minute" in sheet and "06_methods_compared" in sheet
