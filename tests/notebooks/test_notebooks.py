"""Every shipped notebook runs top to bottom on the tiny random models, with no error output."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.notebooks


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernel on this interpreter (the venv's python), whatever kernelspecs the machine has."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / "clipsurgery-test"
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "clipsurgery tests", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path: Path, kernel_specs, monkeypatch):
    # The kernel inherits this environment: tiny models, no downloads, headless matplotlib.
    monkeypatch.setenv("CLIPSURGERY_MODEL", "tiny-random-vit")
    monkeypatch.setenv("CLIPSURGERY_SAM", "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks the inline backend itself
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="clipsurgery-test", kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()

    problems = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                problems.append(f"cell {index}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr" and (
                    "Traceback" in output.text or "Error" in output.text):
                problems.append(f"cell {index} stderr: {output.text[:500]}")
            # Numbers read as numbers: a numpy scalar's repr (np.float32(0.278)) is noise to a reader.
            shown = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            if re.search(r"np\.(float|int|bool_|uint)\w*\(", shown):
                problems.append(f"cell {index} prints a numpy scalar's repr: {shown[:200]!r}")
    assert not problems, f"{path.name} produced error output:\n" + "\n".join(problems)

    widget_outputs = [o for cell in nb.cells for o in cell.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    for output in widget_outputs:
        # Viewers without a kernel (nbconvert HTML, GitHub) show the static copy instead.
        assert "image/png" in output["data"], f"{path.name}: a widget output has no static PNG fallback"
