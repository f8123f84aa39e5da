"""Reference figures made once with trained weights, shown beside a notebook's live result.

``scripts/make_reference.py`` writes ``<name>.png`` and ``<name>.json`` into ``notebooks/reference/``
(it needs the real weights, which nothing here downloads). A lesson then calls
``show_reference(name, live=fig)``: with the files present, the stored figure and its key
numbers appear beside this run's figure; without them, a note says what the reference would
show and how to make it. The JSON holds the model, its weights and the numbers; its
``"weights"`` entry is ``"trained"`` or ``"random"`` (a random-weight file is only a test artefact
and is labelled as such).
"""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .output import figure_bytes

REFERENCE_ENV = "CLIPSURGERY_REFERENCE_DIR"
MAKE_COMMAND = "CLIPSURGERY_MODEL=ViT-B-16:openai python scripts/make_reference.py"


@dataclass(frozen=True)
class Reference:
    """One stored reference: its PNG bytes and the JSON record (model, weights, numbers)."""

    name: str
    png: bytes
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.record.get("weights") == "trained"

    @property
    def numbers(self) -> dict[str, Any]:
        return dict(self.record.get("numbers", {}))


def reference_dir(directory: str | os.PathLike | None = None) -> Path:
    """Where references live: ``directory``, else $CLIPSURGERY_REFERENCE_DIR, else ./reference.

    Notebooks run with their own folder as the working directory, so ./reference is
    notebooks/reference/.
    """
    if directory is not None:
        return Path(directory).expanduser()
    return Path(os.environ.get(REFERENCE_ENV) or "reference").expanduser()


def load_reference(name: str, directory: str | os.PathLike | None = None) -> Reference | None:
    """The stored reference ``name`` (both files present), or None."""
    _check_name(name)
    folder = reference_dir(directory)
    png, record = folder / f"{name}.png", folder / f"{name}.json"
    if not (png.is_file() and record.is_file()):
        return None
    try:
        data = json.loads(record.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{record} is not valid JSON ({exc}); delete it and run {MAKE_COMMAND} again.") from exc
    return Reference(name=name, png=png.read_bytes(), record=data if isinstance(data, dict) else {})


def reference_html(name: str, live: Figure | bytes | None = None, directory: str | os.PathLike | None = None,
                   what: str = "") -> str:
    """HTML showing the live figure (if given) beside the stored reference, or how to make one."""
    reference = load_reference(name, directory)
    live_png = figure_bytes(live, "png") if isinstance(live, Figure) else live
    cells = []
    if live_png:
        cells.append(_image_cell(live_png, "this run"))
    if reference is None:
        note = (f"<b>No reference figure <code>{html.escape(name)}</code> yet.</b> "
                f"{html.escape(what)} Someone with the trained weights runs "
                f"<code>{html.escape(MAKE_COMMAND)}</code> once from the repository root; it writes "
                f"<code>notebooks/reference/{html.escape(name)}.png</code> and <code>.json</code>, and this cell "
                f"then shows them here.")
        cells.append(f'<td style="vertical-align:top;max-width:32em;text-align:left">{note}</td>')
    else:
        model = html.escape(str(reference.record.get("model", "?")))
        caption = f"reference: {model}"
        if not reference.trained:
            caption += " — <b>made with RANDOM weights: a test file, not a reference</b>"
        cells.append(_image_cell(reference.png, caption, _numbers_table(reference.numbers)))
    return '<table style="border:none"><tr>' + "".join(cells) + "</tr></table>"


def show_reference(name: str, live: Figure | bytes | None = None, directory: str | os.PathLike | None = None,
                   what: str = "") -> Reference | None:
    """Display the live figure beside the stored reference ``name`` in a notebook; return the reference.

    live: this run's matplotlib figure (or PNG bytes), shown on the left. what: one sentence on
    what the reference shows, used when it is missing.
    """
    from IPython.display import HTML, display

    display(HTML(reference_html(name, live, directory, what)))
    return load_reference(name, directory)


def _image_cell(png: bytes, caption: str, extra: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<td style="vertical-align:top;text-align:center"><img style="max-width:560px" '
            f'src="data:image/png;base64,{data}"/><br/><small>{caption}</small>{extra}</td>')


def _numbers_table(numbers: dict[str, Any]) -> str:
    if not numbers:
        return ""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_short(v))}</td></tr>"
                   for k, v in numbers.items())
    return f'<table style="font-size:small;margin:auto">{rows}</table>'


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value[:16]) + (", ..." if len(value) > 16 else "") + "]"
    return str(value)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"Reference names are plain file stems such as '03_attention_stats', got {name!r}.")
