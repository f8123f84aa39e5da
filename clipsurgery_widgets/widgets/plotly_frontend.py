"""The browser side of LiveFigure: a small loader module, and plotly's widget code with two fixes.

The loader (:data:`LOADER_ESM`) is what every LiveFigure's state carries instead of plotly's 5 MB
module: the first figure of a page asks its kernel for plotly's code (:func:`plotly_widget_code`),
the other figures of that page wait for the same copy, and restyle messages that arrive meanwhile
are applied, in order, once it is there.

plotly's code (plotly 6-7, an anywidget) is sent with a few lines added to its view class:

- **Width.** plotly draws a view once, at the width its element has then (700 px when, as usual,
  the element is not in the page yet) and follows its container only through JupyterLab's Lumino
  messages, which anywidget views never get. A ResizeObserver on the plot's element calls the
  view's own ``autosizeFigure`` whenever the element's width changes (looking again shortly after,
  as a relayout from the kernel can undo plotly's delayed resize) and reports the width to the
  kernel as ``_view_width``. Figures must have no fixed ``layout.width``.
- **Updates around the first drawing.** An update that reaches the page before or while plotly
  draws a view for the first time is not always on screen, although the kernel's figure has it
  (seen: the first map of a DecompositionExplorer, a hidden panel of a HeatmapExplorer). So once a
  view is drawn it asks its kernel for the figure as it is now (``FIGURE_REQUEST``, answered with
  the figure's plotly JSON) and redraws from that. Later updates arrive in order after the answer.

If plotly's module does not have the expected shape (another plotly release), its code is sent
unchanged: figures then keep their first width, and nothing else changes.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import plotly.graph_objects as go

log = logging.getLogger(__name__)

BUNDLE_REQUEST = "csw-plotly-bundle?"
BUNDLE_REPLY = "csw-plotly-bundle"
FIGURE_REQUEST = "csw-figure?"
FIGURE_REPLY = "csw-figure"

#: The front-end module of every LiveFigure: loads plotly's widget code once per page (see above).
LOADER_ESM = """
const KEY = Symbol.for("clipsurgery.plotly-widget.%(version)s");
const MESSAGES = ["_py2js_addTraces", "_py2js_deleteTraces", "_py2js_moveTraces", "_py2js_restyle",
                  "_py2js_relayout", "_py2js_update", "_py2js_animate", "_py2js_removeLayoutProps",
                  "_py2js_removeTraceProps"];

function plotlyWidget(model) {  // one promise per page for plotly's widget module
  const shared = globalThis[KEY] || (globalThis[KEY] = {promise: null});
  if (shared.promise) return shared.promise;
  shared.promise = new Promise((resolve, reject) => {
    const answer = async (msg) => {
      if (!msg || msg.type !== "%(reply)s") return;
      model.off("msg:custom", answer);
      const url = URL.createObjectURL(new Blob([msg.esm], {type: "text/javascript"}));
      try { resolve(await import(/* webpackIgnore: true */ url)); }
      catch (error) { shared.promise = null; reject(error); }
      finally { URL.revokeObjectURL(url); }
    };
    model.on("msg:custom", answer);
    model.send({type: "%(request)s"});
  });
  return shared.promise;
}

function replaying(model) {  // the model as plotly's code sees it, able to hand it early messages again
  const handlers = new Map(), shown = new Map();
  const view = new Proxy(model, {
    get(target, prop) {
      if (prop === "get") return (name) => (shown.has(name) ? shown.get(name) : target.get(name));
      if (prop === "on") {
        return (event, handler, context) => {
          if (!handlers.has(event)) handlers.set(event, []);
          handlers.get(event).push(handler.bind(context || view));
          return target.on(event, handler, context);
        };
      }
      const value = target[prop];
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const replay = (name, value) => {
    shown.set(name, value);
    try { (handlers.get("change:" + name) || []).forEach((handler) => handler()); }
    finally { shown.delete(name); }
  };
  return {view, replay};
}

export default () => {
  let ready = null;
  return {
    initialize(context) {
      const model = context.model;
      const early = [];  // plotly messages that arrive before its code: applied in order later
      const keep = (name) => () => { const value = model.get(name); if (value !== null) early.push([name, value]); };
      const listeners = MESSAGES.map((name) => [name, keep(name)]);
      listeners.forEach(([name, listener]) => model.on("change:" + name, listener));
      ready = plotlyWidget(model).then((module) => {
        listeners.forEach(([name, listener]) => model.off("change:" + name, listener));
        const widget = module.default();
        const {view, replay} = replaying(model);
        widget.initialize({...context, model: view});
        early.forEach(([name, value]) => replay(name, value));
        return widget;
      });
    },
    async render(context) {
      const widget = await ready;
      return widget.render(context);
    },
  };
};
"""

# The last statement of plotly's widget module names its view class (a minified name), and the
# view's first drawing calls plotly.js through a module-level name: both are found by pattern.
_VIEW_EXPORT = re.compile(r"export\s*\{[^}]*?\b([\w$]+) as FigureView\b[^}]*\}\s*;?")
_PLOTLY_CALL = re.compile(r"perform_render\(\)\{.*?([A-Za-z_$][\w$]*)\.default\.newPlot\(", re.S)

_VIEW_PATCH_JS = """
;(() => {
  const View = %(view)s, Plotly = %(plotly)s.default;
  const render = View.prototype.perform_render, remove = View.prototype.remove;
  View.prototype.perform_render = function () {
    // this.model is plotly's FigureModel; messages go through the widget model it wraps.
    const view = this, el = this.el, model = this.model, comm = this.model.model || this.model;
    // Once drawn, ask the kernel for the figure as it is now and redraw from it: kernel updates
    // that reached the page around the first drawing are not always on screen (module docstring).
    const id = Math.random().toString(36).slice(2);
    comm.on("msg:custom", (msg) => {
      if (!msg || msg.type !== "%(figure_reply)s" || msg.view !== id) return;
      const figure = JSON.parse(msg.figure), layout = figure.layout || {};
      if (!layout.height) layout.height = 360;  // plotly's own default for a widget view
      Plotly.react(el, figure.data || [], layout, model.get("_config"));
    });
    const drawn = (event) => {
      if (!event.detail || event.detail.element !== el) return;
      document.removeEventListener("plotlywidget-after-render", drawn);
      comm.send({type: "%(figure_request)s", view: id});
    };
    document.addEventListener("plotlywidget-after-render", drawn);
    render.call(this);
    // Follow the element's width (see the module docstring of plotly_frontend.py).
    let reported = null, waiting = false, tries = 0;
    const follow = () => {
      const width = el.clientWidth;
      if (!width || !el._fullLayout) return;  // not in the page (or hidden) yet
      if (Math.abs(el._fullLayout.width - width) >= 1 && !waiting && tries < 5) {
        if (el.layout) delete el.layout.width;  // plotly keeps its last autosized width there
        view.autosizeFigure();
        waiting = true;
        tries += 1;
        setTimeout(() => { waiting = false; follow(); }, 400);
      }
      if (width !== reported) {
        reported = width;
        view.model.set("_view_width", width);
        view.model.save_changes();
      }
    };
    if (typeof ResizeObserver === "function") {
      view._cswResize = new ResizeObserver(() => { tries = 0; window.requestAnimationFrame(follow); });
      view._cswResize.observe(el);
    }
  };
  View.prototype.remove = function () {
    if (this._cswResize) this._cswResize.disconnect();
    return remove.call(this);
  };
})();
"""


def patch_plotly_widget_code(code: str) -> str | None:
    """plotly's widget module ``code`` with the view fixes added; None if its shape is unknown."""
    view, plotly_name = _VIEW_EXPORT.search(code), _PLOTLY_CALL.search(code)
    if view is None or plotly_name is None:
        return None
    return code + _VIEW_PATCH_JS % {"view": view.group(1), "plotly": plotly_name.group(1),
                                    "figure_request": FIGURE_REQUEST, "figure_reply": FIGURE_REPLY}


@lru_cache(maxsize=1)
def plotly_widget_code() -> str:
    """plotly's FigureWidget front-end module (JavaScript text, about 5 MB) with the view fixes."""
    esm = go.FigureWidget._esm
    code = Path(esm).read_text(encoding="utf-8") if isinstance(esm, (str, Path)) else str(esm)
    patched = patch_plotly_widget_code(code)
    if patched is None:
        log.warning("plotly's widget module has an unknown shape; figures will keep their first width")
        return code
    return patched
