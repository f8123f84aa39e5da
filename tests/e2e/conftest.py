"""Real-browser fixtures: a private JupyterLab server on loopback and headless Chromium (Playwright).

The server starts once per session with its own config/data/runtime dirs, serves a copy of
notebooks/ (so nothing in the repository is modified), runs kernels with
CLIPSURGERY_MODEL=tiny-random-vit, and is stopped by its PID at the end. The browser is Debian's
Chromium (/usr/bin/chromium, or $CLIPSURGERY_CHROMIUM); Playwright's own browser download is
never used. Without a browser the tests fail when $CI is set and are skipped otherwise.
Screenshots go to test-artifacts/ (git-ignored).

Test files import the helpers below at module level (``from conftest import ...``): at collection the
name ``conftest`` is this file, while inside a running test of a full run it can be tests/unit's.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CLIPSURGERY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                 "--disable-dev-shm-usage"]
SERVER_START_TIMEOUT = 90.0
E2E_MODEL = os.environ.get("CLIPSURGERY_E2E_MODEL", "tiny-random-vit")


def _unavailable(reason: str) -> None:
    """Fail in CI (a missing browser must not pass silently), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"End-to-end tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"End-to-end tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}. Install it (bash scripts/install-browser.sh, or "
                     f"apt-get install chromium) or point CLIPSURGERY_CHROMIUM at a Chromium binary.")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[test]').")
    return CHROMIUM


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    pid: int
    log: Path

    def lab_url(self, path: str) -> str:
        # A fresh workspace per page: otherwise JupyterLab reopens notebooks of earlier tests.
        return f"{self.url}/lab/workspaces/t{secrets.token_hex(4)}/tree/{path}?reset&token={self.token}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lab_environment(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython", "CLIPSURGERY_CACHE_DIR": "cache"}
    for name, sub in dirs.items():
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(base / sub)
    # No news toast over the page.
    news = base / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True, exist_ok=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    # Every cell stays in the page (Lab 4 otherwise detaches cells scrolled far away, and their widgets).
    tracker = base / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    # $CLIPSURGERY_E2E_MODEL picks another model for a measurement run (e.g. "ViT-B-16:none").
    env.update(CLIPSURGERY_MODEL=E2E_MODEL, CLIPSURGERY_SAM="tiny", HF_HUB_OFFLINE="1")
    env.pop("MPLBACKEND", None)
    env.pop("JUPYTER_PATH", None)
    return env


def _wait_until_up(url: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_TIMEOUT:.0f} s; log:\n"
                       f"{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server we started, by its PID (SIGTERM lets it shut its kernels down)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # Its kernels share its process group (start_new_session); remove any that outlived it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.contextmanager
def running_server(app: str, base: Path, server_class: type = LabServer, *extra_args: str):
    """A private Jupyter server (``app``: "jupyterlab" or "notebook") serving a copy of notebooks/.

    Own config/data/runtime dirs under ``base``, loopback, a random token; stopped by its PID.
    """
    root = base / "root"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    env = _lab_environment(base)
    port, token = _free_port(), secrets.token_hex(16)
    log = base / f"{app}.log"
    command = [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
               *extra_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, token, proc, log)
        yield server_class(url=url, token=token, root=root, pid=proc.pid, log=log)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def lab_server(chromium_path, tmp_path_factory) -> LabServer:
    with running_server("jupyterlab", tmp_path_factory.mktemp("jupyterlab"), LabServer,
                        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate") as server:
        yield server


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        save_screenshot(page, f"FAILED-{request.node.name}")
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


# --- helpers used by the tests ------------------------------------------------------------------

def save_screenshot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"


class Lab:
    """A JupyterLab page driven by Playwright: open notebooks, run them, look at their outputs."""

    def __init__(self, page, server: LabServer):
        self.page = page
        self.server = server

    def open(self, path: str) -> None:
        """Open a notebook (path relative to the server root, e.g. notebooks/x.ipynb); wait for its kernel."""
        self.page.goto(self.server.lab_url(path))
        self.page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
        self.wait_for_kernel_idle()
        time.sleep(0.5)  # JupyterLab sometimes asks for a kernel just after loading
        self.dismiss_dialogs()

    def dismiss_dialogs(self) -> list[str]:
        """Accept any open dialog (e.g. a spurious "Select Kernel", default kernel chosen); return their texts."""
        texts = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dialog = self.page.locator(".jp-Dialog")
            if dialog.count() == 0:
                break
            text = dialog.first.inner_text()
            if not texts or texts[-1] != text:
                texts.append(text)
            try:
                dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click(timeout=5_000)
                dialog.first.wait_for(state="detached", timeout=5_000)
            except Exception:  # noqa: BLE001 - the dialog may have been replaced; look again
                time.sleep(0.5)
        if texts:
            self.wait_for_kernel_idle()
        return texts

    def wait_for_kernel_idle(self, timeout: float = 60_000) -> None:
        self.page.wait_for_selector(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator[data-status='idle']",
                                    timeout=timeout)

    def prompts(self) -> list[str]:
        """The input prompts of the code cells: "[ ]:", "[*]:" or "[n]:"."""
        return self.page.eval_on_selector_all(f"{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt",
                                              "nodes => nodes.map(n => n.textContent.trim())")

    def run_all(self, timeout: float = 180.0) -> None:
        """Run every cell and wait until all have finished.

        Known flake: the kernel can read idle before its connection is usable, and a command sent
        then is dropped. So after asking, check that the first prompt turned into [*] or [n]; if it
        did not, ask again.
        """
        for _ in range(4):
            self.dismiss_dialogs()
            self.page.click(f"{NOTEBOOK} .jp-Cell >> nth=0")
            self.page.keyboard.press("Escape")
            self.page.click("li.lm-MenuBar-item:has-text('Run')")
            self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                first = (self.prompts() or ["[ ]:"])[0]
                if first.startswith("[*]") or _finished(first):
                    break
                time.sleep(0.2)
            else:
                continue
            break
        else:
            raise AssertionError("JupyterLab ignored 'Run All Cells' four times")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            prompts = self.prompts()
            if prompts and all(_finished(p) for p in prompts):
                self.wait_for_kernel_idle()
                return
            time.sleep(0.25)
        raise AssertionError(f"cells did not finish within {timeout:.0f} s; prompts: {self.prompts()}")

    def run_notebook(self, path: str, widgets: str = ".clipsurgery-widget .js-plotly-plot") -> None:
        """Open a notebook, run every cell, check no cell printed an error, wait for ``widgets`` to draw."""
        self.open(path)
        self.run_all()
        assert self.error_outputs() == []
        self.wait_for_widgets(widgets)

    def error_outputs(self) -> list[str]:
        """Text of error outputs (tracebacks) in the open notebook."""
        texts = self.page.eval_on_selector_all(
            f"{NOTEBOOK} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
            "nodes => nodes.map(n => n.textContent)")
        return [t for t in texts if "Traceback" in t or "Error" in t]

    def wait_for_widgets(self, selector: str = ".clipsurgery-widget .js-plotly-plot", count: int = 1,
                         timeout: float = 60_000) -> None:
        self.page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n",
                                    arg=[selector, count], timeout=timeout)

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        return save_screenshot(self.page, name, full_page)

    def save(self) -> None:
        """Save the open notebook (a reloaded page reads it from disk), as a person would: Ctrl+S.

        The first cell is selected by its input prompt, not its middle, where a widget's plot may
        sit and would take the click.
        """
        self.page.locator(f"{NOTEBOOK} .jp-Cell .jp-InputArea-prompt").first.click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        self.page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=30_000)


def _finished(prompt: str) -> bool:
    return prompt.startswith("[") and prompt[1:].split("]")[0].strip().isdigit()


@pytest.fixture
def lab(page, lab_server) -> Lab:
    """Helpers bound to this test's page and the session's JupyterLab server.

    After the test its kernels are shut down: each holds a model and about 1 GB, and the tests
    after it should not share the two cores with kernels nobody looks at any more.
    """
    yield Lab(page, lab_server)
    shut_down_kernels(lab_server.url, lab_server.token)


def shut_down_kernels(url: str, token: str) -> None:
    """Shut down every kernel of the server at ``url`` (best effort: a test's result does not depend on it)."""
    try:
        with urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10) as response:
            kernels = json.loads(response.read())
        for kernel in kernels:
            request = urllib.request.Request(f"{url}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        pass


def hover_over(page, box: dict, fx: float, fy: float, attempts: int = 5, wait_ms: float = 4_000):
    """Hover at fractions (fx, fy) of an element's box until plotly shows its hover label; return it.

    A single mouse move is not enough when plotly redraws the plot under a pointer that is already
    there (no new mousemove reaches it), so each attempt leaves the spot and comes back in steps.
    """
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    hover = page.locator(".hoverlayer .hovertext").first
    for attempt in range(attempts):
        page.mouse.move(x - 12 - 4 * attempt, y - 12)
        page.mouse.move(x, y, steps=4)
        try:
            hover.wait_for(timeout=wait_ms)
            return hover
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again from elsewhere
            continue
    raise AssertionError(f"no hover label at ({x:.0f}, {y:.0f}) after {attempts} attempts")


def write_notebook(server: LabServer, name: str, cells: list[str]) -> str:
    """Write a notebook of code cells (no outputs) into the server's root; return its path for Lab.open."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = server.root / "generated" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return f"generated/{name}"


# A summary of what each plotly plot inside an element holds, for comparing two moments (e.g. before and
# after a page reload): per trace its type, visibility, name, number of values and the sum of its z (or y),
# per layout the annotation texts, shapes, images and title; plus the values of the element's controls
# and texts outside the plots. Call as page.evaluate(PLOT_STATE_JS, selector).
PLOT_STATE_JS = r"""(selector) => {
    const root = document.querySelector(selector);
    if (!root) return null;
    const decode = (spec) => {  // plotly's base64 typed-array spec {dtype, bdata, shape}
        const bytes = Uint8Array.from(atob(spec.bdata), c => c.charCodeAt(0));
        const kinds = {f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array, i2: Int16Array,
                       u2: Uint16Array, i4: Int32Array, u4: Uint32Array};
        const Kind = kinds[spec.dtype.replace(/[<>|=]/, '')] || Uint8Array;
        return new Kind(bytes.buffer);
    };
    const summary = (v) => {  // [count, sum] of the finite numbers in v (nested arrays, typed arrays)
        if (v === null || v === undefined) return [0, 0];
        if (typeof v === 'number') return Number.isFinite(v) ? [1, v] : [1, 0];
        if (typeof v === 'string' || typeof v === 'boolean') return [1, 0];
        if (v.bdata !== undefined && v.dtype !== undefined) return summary(decode(v));
        if (ArrayBuffer.isView(v) || Array.isArray(v)) {
            let n = 0, s = 0;
            for (const x of v) { const [a, b] = summary(x); n += a; s += b; }
            return [n, s];
        }
        return [0, 0];
    };
    const round = (x) => Math.round(x * 1000) / 1000;
    const plots = Array.from(root.querySelectorAll('.js-plotly-plot')).map((gd) => {
        const layout = gd.layout || {};
        return {
            traces: (gd.data || []).map((t) => {
                const [n, s] = summary(t.z !== undefined ? t.z : t.y);
                return {type: t.type || 'scatter', visible: t.visible === undefined ? true : t.visible,
                        name: t.name || '', n: n, sum: round(s)};
            }),
            kinds: (gd.data || []).map(t => t.z === undefined || t.z === null ? String(t.z)
                : `${t.z.constructor ? t.z.constructor.name : typeof t.z}:${t.z.length}`),
            annotations: (layout.annotations || []).filter(a => a.visible !== false).map(a => a.text),
            shapes: (layout.shapes || []).filter(s => s.visible !== false).length,
            images: (layout.images || []).filter(i => i.visible !== false).length,
            title: layout.title ? (typeof layout.title === 'string' ? layout.title : layout.title.text || '') : '',
        };
    });
    const inPlot = (el) => el.closest('.js-plotly-plot') !== null;
    const controls = Array.from(root.querySelectorAll(
            '.widget-html-content, .widget-readout, .widget-label, button, select, input'))
        .filter(el => !inPlot(el) && el.offsetParent !== null)
        .map(el => (el.tagName === 'SELECT' || el.tagName === 'INPUT') ? `${el.tagName}=${el.value}`
                   : (el.innerText || '').trim().replace(/Done in [0-9.]+ s/, 'Done'));
    return {plots: plots, controls: controls};
}"""


# What does not fit: one widget (selector) in the page as laid out now. Returns
# {problems: [short sentences], cell: the output cell's width, plots: each plotly plot's width}.
# Checked: the widget, its plots (and with `controls`, every control box) inside the output cell;
# no box a person would have to scroll sideways; no plotly toolbar over a title; with `titles`,
# no two panel titles over each other.
WIDGET_FIT_JS = r"""([selector, controls, titles]) => {
    const root = document.querySelector(selector);
    if (!root) return {problems: ['widget not found'], cell: 0, plots: []};
    const problems = [];
    const cell = (root.closest('.jp-OutputArea-output') || root.closest('.jp-OutputArea')).getBoundingClientRect();
    const name = (el) => (typeof el.className === 'string' ? el.className : el.tagName)
        .split(' ').filter(k => k.startsWith('csw-') || k.startsWith('widget-') || k.startsWith('js-plotly')
                                 || k.startsWith('jupyter-')).slice(0, 3).join('.') || el.tagName;
    const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const plots = [...root.querySelectorAll('.js-plotly-plot')];
    const boxes = [root, ...plots, ...(controls ? root.querySelectorAll('.widget-box, .widget-hbox, .widget-vbox, '
                                                  + '.widget-html, .widget-slider, button, select, input') : [])];
    for (const el of boxes) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;  // not displayed (e.g. Stop while nothing runs)
        if (r.left < cell.left - 1 || r.right > cell.right + 1)
            problems.push(`${name(el)} [${Math.round(r.left)}, ${Math.round(r.right)}] outside the cell `
                          + `[${Math.round(cell.left)}, ${Math.round(cell.right)}]`);
    }
    for (const el of [root, ...root.querySelectorAll('*')]) {
        if (el.closest('svg') || ['INPUT', 'TEXTAREA', 'SELECT', 'OPTION'].includes(el.tagName)) continue;
        if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
            const overflow = getComputedStyle(el).overflowX;
            // Content spilling out of a box that does not scroll is drawn, not hidden behind a
            // scrollbar; what a person has to scroll sideways to see is what this looks for.
            if (el !== root && !['auto', 'scroll'].includes(overflow)) continue;
            problems.push(`${name(el)} scrolls sideways: ${el.scrollWidth} px in ${el.clientWidth} (overflow-x ${overflow})`);
        }
    }
    for (const gd of plots) {
        const bar = gd.querySelector('.modebar');
        const m = bar ? bar.getBoundingClientRect() : null;
        const shown = [...gd.querySelectorAll('.annotation, .g-gtitle, .gtitle')]
            .map(t => [t.textContent.slice(0, 40), t.getBoundingClientRect()]).filter(([, r]) => r.width > 0);
        for (const [text, r] of shown)
            if (m && m.width > 0 && overlap(m, r)) problems.push(`the toolbar covers the title '${text}'`);
        if (titles)
            for (let i = 0; i < shown.length; i++)
                for (let j = i + 1; j < shown.length; j++)
                    if (overlap(shown[i][1], shown[j][1])) problems.push(`'${shown[i][0]}' overlaps '${shown[j][0]}'`);
    }
    return {problems, cell: Math.round(cell.width), plots: plots.map(gd => Math.round(gd.getBoundingClientRect().width))};
}"""


def widget_fit(page, selector: str, controls: bool = True, titles: bool = False) -> dict:
    """:data:`WIDGET_FIT_JS` for the widget at ``selector``: {problems, cell, plots}."""
    return page.evaluate(WIDGET_FIT_JS, [selector, controls, titles])


#: The first cell of a generated notebook that shows every widget kind on the cat photo; a widget is
#: made with ``tagged(widget, case)`` so that a test finds it by the class ``csw-case-<case>``.
EVERY_WIDGET_SETUP = """\
from clipsurgery_widgets.engine import Explainer, load_model_from_env, sample_image
from clipsurgery_widgets.engine.sam.refiner import load_sam_from_env
from clipsurgery_widgets.widgets import (AttentionExplorer, DecompositionExplorer, HeatmapExplorer, SamWidget,
                                         SideBySide, TokenExplorer)

explainer = Explainer(load_model_from_env())
cat = sample_image("cat")


def tagged(widget, case):
    widget.add_class(f"csw-case-{case}")  # how the test finds it
    return widget
"""
