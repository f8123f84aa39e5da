"""HeatmapExplorer: text-to-image heat maps of CLIP Surgery (and raw CLIP) for labels you type."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Sequence

import ipywidgets as widgets
import numpy as np

from .. import figures
from ..data.presets import PRESETS
from ..engine.errors import ClipSurgeryError, TextInputError
from ..engine.images import check_input_size
from ..engine.regions import (
    display_step,
    normalised_patch_grid,
    patch_at,
    region_outline,
)
from .base import ExplorerWidget
from .plotting import (
    PanelFigure,
    bar_figure,
    discrete_colorscale,
    plotly_colorscale,
    subsample,
)

VIEWS = (("one label", "overlay"), ("all labels", "grid"), ("raw vs surgery", "compare"),
         ("segmentation", "segmentation"))
REDUNDANCY = (("auto", "auto"), ("between labels", "labels"), ("empty string", "empty"), ("none", "none"))
SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
CUSTOM = "custom"
FIGURE_WIDTH = 780  # pixels; fixed so that panel sizes (and the data sent for them) are predictable
_PLOT_WIDTH = FIGURE_WIDTH - 90  # without the margins and the colour bar
_WIDE = {"description_width": "initial"}


def _control_property(name: str, allowed: Sequence | None = None, doc: str = "") -> property:
    """A property reading and writing ``self.controls[name].value``, refusing out-of-range values.

    (ipywidgets sliders would silently clamp them; a Python caller should hear about it.)
    """
    def get(self) -> Any:
        return self.controls[name].value

    def set(self, value: Any) -> None:
        control = self.controls[name]
        if allowed is not None and value not in allowed:
            raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(map(str, allowed))}.")
        low, high = getattr(control, "min", None), getattr(control, "max", None)
        if low is not None and not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} for this model, not {value!r}.")
        control.value = value

    return property(get, set, doc=doc)


class HeatmapExplorer(ExplorerWidget):
    """Explore which image regions a CLIP model ties to each label.

    Args:
        explainer: an ``engine.Explainer``.
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        labels: list of labels or one comma-separated string; "a+b" combines targets.
        view: "overlay" (one label), "grid" (every label), "compare" (raw CLIP vs CLIP Surgery)
            or "segmentation" (argmax label per pixel).
        label: the label shown in the overlay and compare views (default the first).
        redundancy: feature-surgery mode: "auto", "labels", "empty" or "none".
        size: model input size (224, 336, 448, 512 or any multiple of the patch size).
        depth: surgery depth (last blocks with the v-v path); default min(6, number of blocks).
        cmap, opacity: colour map and weight of the heat maps over the image.
        threshold: outline the region where the map >= threshold (None: no outline).
        heat_side: the segmentation view is sent at about this many pixels on the long side (heat
            maps travel as their patch grid).

    Everything the controls do is also available from Python through the properties below; the
    current result is ``explanation`` and ``figure()`` gives a static matplotlib figure.
    """

    def __init__(self, explainer: Any, image: Any = None, labels: Sequence[str] | str = ("cat", "dog", "grass", "sky"),
                 *, view: str = "overlay", label: str | None = None, redundancy: str = "auto", size: Any = 224,
                 depth: int | None = None, cmap: str = "jet", opacity: float = 0.6, threshold: float | None = None,
                 heat_side: int = 200):
        super().__init__()
        self.explainer = explainer
        self.heat_side = heat_side
        self._rgb: np.ndarray | None = None
        self._image_version = 0
        self._explanation = None
        self._explanation_version = 0
        self._wanted_label = label
        self._selected: dict | None = None
        self._panels: PanelFigure | None = None
        self._derived_cache: dict[tuple[int, str], np.ndarray] = {}
        self._syncing = False
        self._build_controls(labels)
        blocks = _num_blocks(explainer.model)
        self.view, self.redundancy, self.cmap, self.opacity, self.threshold = view, redundancy, cmap, opacity, threshold
        self.depth = depth if depth is not None else min(6, blocks or 6)
        self.size = size
        self._wire()
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")
            self._render()

    # --- Python API --------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """The labels typed in the widget; set a list or a comma-separated string."""
        return _parse_labels(self.controls["labels"].value)

    @labels.setter
    def labels(self, value: Sequence[str] | str) -> None:
        self.controls["labels"].value = value if isinstance(value, str) else ", ".join(value)

    @property
    def label(self) -> str | None:
        """The label shown in the one-label and raw-vs-surgery views."""
        return self.controls["label"].value

    @label.setter
    def label(self, value: str) -> None:
        if value in self.controls["label"].options:
            self.controls["label"].value = value
        elif value in self.labels:
            self._wanted_label = value  # typed but its maps are not here yet: shown when they arrive
        else:
            exc = TextInputError(f"Label {value!r} is not one of the labels ({', '.join(self.labels)}); "
                                 f"add it to the labels first.")
            self._show_error(exc, "choosing a label")
            raise exc

    view = _control_property("view", [k for _, k in VIEWS], doc='"overlay", "grid", "compare" or "segmentation".')
    redundancy = _control_property("redundancy", [k for _, k in REDUNDANCY],
                                   doc='Feature-surgery mode: "auto", "labels", "empty" or "none".')
    cmap = _control_property("cmap", CMAPS, doc="Colour map of the heat maps (a matplotlib name).")
    depth = _control_property("depth", doc="Surgery depth: how many final blocks get the v-v path.")
    opacity = _control_property("opacity", doc="Weight of the heat map over the image, 0..1.")

    @property
    def threshold(self) -> float | None:
        """Outline level in (0, 1], or None for no outline."""
        value = self.controls["threshold"].value
        return value if value > 0 else None

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] or None for no outline, not {value!r}.")
        self.controls["threshold"].value = 0.0 if value is None else float(value)

    @property
    def size(self) -> int:
        """Model input size in pixels (square)."""
        chosen = self.controls["size"].value
        return self.controls["custom_size"].value if chosen == CUSTOM else chosen

    @size.setter
    def size(self, value: int) -> None:
        check_input_size(value, self.explainer.model.patch_size)  # a clear error for a bad size, at once
        value = int(value)
        if value in SIZES:
            self.controls["size"].value = value
        else:
            self.controls["custom_size"].value = value
            self.controls["size"].value = CUSTOM
        self.controls["custom_size"].layout.display = None if value not in SIZES else "none"

    @property
    def explanation(self):
        """The Explanation on screen (None before the first one arrives)."""
        return self._explanation

    @property
    def selected(self) -> dict | None:
        """The last clicked point: x, y, row, col, method and per-label ``scores``, or None."""
        return self._selected

    def scores_at(self, x: float, y: float, method: str = "surgery") -> dict[str, float]:
        """Every label's patch score at pixel (x, y) of the image (the patch under that pixel)."""
        self.wait(self.display_timeout)
        info = self._patch_info(x, y, method)
        return dict(zip(self._explanation.labels, info["scores"]))

    def click(self, x: float, y: float, panel: int = 0) -> dict[str, float]:
        """Do what a click at pixel (x, y) of ``panel`` does: show the per-label bar chart."""
        self.wait(self.display_timeout)
        self._on_panel_click(panel, x, y)
        return dict(zip(self._explanation.labels, self._selected["scores"]))

    @property
    def current_figure(self):
        """The plotly FigureWidget of the current view."""
        return self._view_box.children[0] if self._view_box.children else None

    @property
    def bar_chart(self):
        """The per-label bar chart FigureWidget (None until a point is clicked)."""
        return self._bars

    # --- controls ----------------------------------------------------------------------------

    def _build_controls(self, labels: Sequence[str] | str) -> None:
        model = self.explainer.model
        blocks = _num_blocks(model)
        text = labels if isinstance(labels, str) else ", ".join(labels)
        c = self.controls = {
            "labels": widgets.Text(value=text, description="Labels", continuous_update=False, style=_WIDE,
                                   placeholder="comma-separated, e.g. cat, dog, grass (a+b combines)",
                                   layout=widgets.Layout(flex="1 1 320px")),
            "preset": widgets.Dropdown(options=[("preset…", "")] + [(k, k) for k in PRESETS], value="",
                                       layout=widgets.Layout(width="170px")),
            "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
            "view": widgets.ToggleButtons(options=VIEWS, value="overlay",
                                          style={"button_width": "auto"}),
            "label": widgets.Dropdown(options=[], description="Label", style=_WIDE,
                                      layout=widgets.Layout(width="220px")),
            "redundancy": widgets.Dropdown(options=REDUNDANCY, description="Redundancy", style=_WIDE,
                                           value="auto",
                                           layout=widgets.Layout(width="230px")),
            "size": widgets.Dropdown(options=[(str(s), s) for s in SIZES] + [(CUSTOM, CUSTOM)], value=SIZES[0],
                                     description="Input size", style=_WIDE, layout=widgets.Layout(width="170px")),
            "custom_size": widgets.BoundedIntText(value=640, min=model.patch_size, max=4096, step=model.patch_size,
                                                  layout=widgets.Layout(width="80px", display="none")),
            "depth": widgets.IntSlider(value=min(6, blocks or 6), min=1, max=blocks or 12,
                                       description="Surgery depth", style=_WIDE, disabled=blocks is None,
                                       continuous_update=False, layout=widgets.Layout(width="260px")),
            "cmap": widgets.Dropdown(options=CMAPS, value="jet", description="Colours",
                                     style=_WIDE, layout=widgets.Layout(width="160px")),
            "opacity": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="Opacity",
                                           style=_WIDE, layout=widgets.Layout(width="250px")),
            "threshold": widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05,
                                             description="Outline ≥", style=_WIDE,
                                             layout=widgets.Layout(width="250px")),
        }
        for name, control in c.items():  # stable CSS hooks for tests and custom styling
            control.add_class(f"csw-{name.replace('_', '-')}")
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self._view_box = widgets.Box(layout=widgets.Layout(width="100%"))
        self._bar_box = widgets.Box(layout=widgets.Layout(width="100%"))
        self._view_box.add_class("csw-plot")
        self._bar_box.add_class("csw-bars")
        self._bars = None
        self.children = [
            widgets.HBox([c["labels"], c["preset"], c["upload"]], layout=wrap),
            widgets.HBox([c["view"], c["label"]], layout=wrap),
            widgets.HBox([c["redundancy"], c["size"], c["custom_size"], c["depth"]], layout=wrap),
            widgets.HBox([c["cmap"], c["opacity"], c["threshold"]], layout=wrap),
            self._status_html, self._error_html, self._view_box, self._bar_box,
        ]

    def _wire(self) -> None:
        c = self.controls
        recompute = self._guarded(lambda change: self._request(), "reading the settings")
        for name in ("labels", "redundancy", "depth", "custom_size"):
            c[name].observe(recompute, names="value")
        c["size"].observe(self._guarded(self._on_size, "choosing the input size"), names="value")
        c["preset"].observe(self._guarded(self._on_preset, "choosing a preset"), names="value")
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        redraw = self._guarded(lambda change: self._syncing or self._render(), "drawing the view")
        for name in ("view", "label", "cmap", "opacity", "threshold"):
            c[name].observe(redraw, names="value")

    def _on_size(self, change: dict) -> None:
        self.controls["custom_size"].layout.display = None if change["new"] == CUSTOM else "none"
        self._request()

    def _on_preset(self, change: dict) -> None:
        if change["new"]:
            self.controls["labels"].value = ", ".join(PRESETS[change["new"]])

    # --- requests ----------------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock:
            self._rgb = rgb
            self._image_version += 1
            self._explanation = None
            self._selected = None
            self._bar_box.layout.display = "none"  # its patch belonged to the previous image
            self._render()
            self._request()  # inside the lock: a result for the old image can no longer land in between

    def _request(self) -> None:
        if self._rgb is None:
            return
        labels = self.labels
        if not labels:
            raise TextInputError("Type at least one label, e.g. 'cat, dog' (separate labels with commas).")
        rgb, size, depth, redundancy = self._rgb, self.size, self.depth, self.redundancy
        new_image = self._explanation is None
        what = "Encoding the image and explaining" if new_image else "Explaining"
        self._submit(
            work=lambda: self.explainer.explain(rgb, labels, method="both", redundancy=redundancy,
                                                size=size, depth=depth),
            apply=self._apply,
            busy_text=f"{what} {len(labels)} label{'s' * (len(labels) != 1)} at {size} px…",
            doing="explaining the image",
            done_text=lambda e, s: (f"{len(e.labels)} labels, grid {e.grid[0]}x{e.grid[1]}, "
                                    f"redundancy '{e.redundancy}' · {s:.2f} s"))

    def _apply(self, explanation) -> None:
        self._explanation = explanation
        self._explanation_version += 1
        dropdown = self.controls["label"]
        keep = self._wanted_label if self._wanted_label in explanation.labels else dropdown.value
        self._syncing = True
        try:
            dropdown.options = list(explanation.labels)
            dropdown.value = keep if keep in explanation.labels else explanation.labels[0]
        finally:
            self._syncing = False
        self._wanted_label = None
        self._render()
        if self._selected is not None:
            self._on_panel_click(self._selected["panel"], self._selected["x"], self._selected["y"])

    # --- drawing -----------------------------------------------------------------------------

    def _panel_plan(self) -> list[tuple[str, str]]:
        """(method, label) per panel of the current view."""
        view, labels = self.view, (self._explanation.labels if self._explanation else ())
        label = self.label or (labels[0] if labels else "")
        if view == "grid":
            return [("surgery", t) for t in labels] or [("surgery", "")]
        if view == "compare":
            return [("raw", label), ("surgery", label)]
        return [("segmentation" if view == "segmentation" else "surgery", label)]

    def _render(self) -> None:
        with self._lock:
            plan = self._panel_plan()
            panels = self._figure(len(plan))
            shape = _grid_shape(len(plan), self.view == "grid", self._rgb)
            segmentation = plan[0][0] == "segmentation"
            with panels.fig.batch_update():
                panels.arrange(len(plan), shape.ncols, shape.height, width=FIGURE_WIDTH,
                               right_margin=140 if segmentation else 70)
                panels.set_titles([_title(method, label, short=self.view == "grid") for method, label in plan])
                for index, _ in enumerate(plan):
                    if self._rgb is not None:
                        panels.set_image(index, self._rgb, key=self._image_version, max_side=shape.image_side)
                if self._explanation is not None:
                    for index, (method, label) in enumerate(plan):
                        self._draw_panel(panels, index, method, label,
                                         showscale=index == len(plan) - 1, bar_px=min(300, shape.height - 40))
                self._draw_legend(panels, plan)
                marker = self._selected
                panels.set_marker(None if marker is None or marker["panel"] >= len(plan)
                                  else (marker["x"], marker["y"]), 0 if marker is None else marker["panel"])
            figure = panels.go_live()
            if self._view_box.children != (figure,):
                self._view_box.children = (figure,)

    def _figure(self, n_panels: int) -> PanelFigure:
        """The one PanelFigure of this widget, rebuilt only when it needs more panels.

        The old figure is not closed: its view may still be on screen until the swap, and closing
        a plotly FigureWidget under a live view breaks the browser's message handling.
        """
        if self._panels is None or self._panels.capacity < n_panels:
            capacity = max(4, -(-n_panels // 4) * 4)
            self._panels = PanelFigure(capacity, staged=True,
                                       on_click=self._guarded(self._on_panel_click, "reading the clicked point"))
        return self._panels

    def _draw_panel(self, panel: PanelFigure, index: int, method: str, label: str, showscale: bool,
                    bar_px: int) -> None:
        e = self._explanation
        if method == "segmentation":
            step = display_step(e.image_size, self.heat_side)
            panel.set_heat(index, (self._explanation_version, method, step), subsample(self._derived("seg"), step),
                           step, zmin=-0.5, zmax=len(e.labels) - 0.5)
            panel.set_style(index, discrete_colorscale(figures.label_colors(len(e.labels))), self.opacity,
                            smooth=False)
            panel.set_outline(index, [])
            return
        maps = e.surgery if method == "surgery" else e.raw
        t = e.labels.index(label)
        hover = (f"<b>{html.escape(label)}</b> ({figures.METHOD_TITLES[method]})<br>"
                 "normalised %{z:.3f}<br>raw score %{customdata:.4f}<br>patch at x %{x:.0f}, y %{y:.0f}"
                 "<extra></extra>")
        # The patch grid travels, not an image-sized map: the browser interpolates it bilinearly,
        # which is how the engine resizes it too.
        panel.set_patch_heat(index, (self._explanation_version, method, label), self._derived(method)[t],
                             e.image_size, customdata=maps.patch_scores[:, t].reshape(e.grid), hovertemplate=hover)
        panel.set_style(index, plotly_colorscale(self.cmap), self.opacity, showscale=showscale, bar_px=bar_px)
        panel.set_outline(index, region_outline(maps.maps[t], self.threshold) if self.threshold else [])

    def _derived(self, what: str) -> np.ndarray:
        """Per-explanation arrays the views share, computed once: "surgery"/"raw" normalised patch
        grids [T, gh, gw] and "seg", the argmax label per pixel [H, W]."""
        key = (self._explanation_version, what)
        if key not in self._derived_cache:
            e = self._explanation
            self._derived_cache = {k: v for k, v in self._derived_cache.items() if k[0] == key[0]}
            self._derived_cache[key] = (e.segmentation("surgery") if what == "seg" else
                                        normalised_patch_grid(getattr(e, what).patch_scores, e.grid))
        return self._derived_cache[key]

    def _draw_legend(self, panel: PanelFigure, plan: list[tuple[str, str]]) -> None:
        e = self._explanation
        if plan[0][0] != "segmentation" or e is None:
            panel.set_legend([], np.zeros((0, 3)))
            return
        present = np.unique(self._derived("seg"))
        colors = figures.label_colors(len(e.labels))
        panel.set_legend([e.labels[i] for i in present], colors[present])

    # --- clicks ------------------------------------------------------------------------------

    def _patch_info(self, x: float, y: float, method: str) -> dict:
        e = self._explanation
        if e is None:
            raise ClipSurgeryError("No maps yet: set an image and labels first.")
        row, col = patch_at(e.image_size, e.grid, x, y)
        maps = e.surgery if method == "surgery" else e.raw
        index = row * e.grid[1] + col
        yi, xi = int(round(y)), int(round(x))
        return dict(x=x, y=y, row=row, col=col, method=method, scores=maps.patch_scores[index].tolist(),
                    normalised=maps.maps[:, yi, xi].tolist())

    def _on_panel_click(self, panel: int, x: float, y: float) -> None:
        with self._lock:
            method = "raw" if self.view == "compare" and panel == 0 else "surgery"
            info = self._patch_info(x, y, method)
            info["panel"] = panel
            self._selected = info
            self._figure(len(self._panel_plan())).set_marker((x, y), panel)
            self._draw_bars(info)

    def _draw_bars(self, info: dict) -> None:
        if self._bars is None:
            self._bars = bar_figure()
            self._bar_box.children = (self._bars,)
        self._bar_box.layout.display = None
        labels = list(self._explanation.labels)
        colors = ["#d62728" if t == self.label else "#1f77b4" for t in labels]
        title = (f"{figures.METHOD_TITLES[info['method']]} score of every label at patch "
                 f"(row {info['row']}, col {info['col']}) · pixel ({info['x']:.0f}, {info['y']:.0f})")
        with self._bars.batch_update():
            bar = self._bars.data[0]
            bar.update(x=[html.escape(t) for t in labels], y=np.round(info["scores"], 5).tolist(),
                       customdata=np.round(info["normalised"], 3).tolist(), marker=dict(color=colors),
                       hovertemplate="<b>%{x}</b><br>score %{y:.4f}<br>normalised %{customdata:.3f}<extra></extra>")
            self._bars.layout.title.text = title

    # --- static figure -----------------------------------------------------------------------

    def _render_figure(self):
        e, rgb = self._explanation, self._rgb
        if e is None or rgb is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image and labels, and wait for the maps.")
        label = self.label if self.label in e.labels else e.labels[0]
        if self.view == "grid":
            return figures.label_grid(rgb, e, "surgery", None, self.cmap, self.opacity, self.threshold)
        if self.view == "compare":
            return figures.explanation_grid(rgb, e, ("raw", "surgery"), [label], self.cmap, self.opacity,
                                            self.threshold)
        if self.view == "segmentation":
            return figures.segmentation_figure(rgb, e, "surgery", self.opacity)
        return figures.overlay_figure(rgb, e, label, "surgery", self.cmap, self.opacity, self.threshold)


def _parse_labels(text: str) -> list[str]:
    """'cat, dog,, cat' -> ['cat', 'dog']: comma-separated, stripped, empties and repeats dropped."""
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def _title(method: str, label: str, short: bool = False) -> str:
    name = "segmentation (argmax)" if method == "segmentation" else figures.METHOD_TITLES[method]
    if short and label:
        return html.escape(label)
    return html.escape(f"{name}: {label}" if label and method != "segmentation" else name)


@dataclass(frozen=True)
class _GridShape:
    ncols: int
    height: int      # figure height in pixels
    image_side: int  # longest side of the image sent per panel


def _grid_shape(n_panels: int, grid: bool, rgb: np.ndarray | None, width: int = _PLOT_WIDTH) -> _GridShape:
    """Panel arrangement for a plot area ``width`` pixels wide; small panels get smaller images."""
    aspect = rgb.shape[0] / rgb.shape[1] if rgb is not None else 0.75
    if not grid:
        height = min(560, max(280, round(width / n_panels * aspect) + 60))
        return _GridShape(n_panels, height, 640)
    ncols = n_panels if n_panels <= 4 else 4 if n_panels <= 12 else 6
    rows = -(-n_panels // ncols)
    row_height = round(width / ncols * aspect) + 28
    return _GridShape(ncols, max(200, rows * row_height + 36), 160 if ncols > 4 else 320)


def _num_blocks(model: Any) -> int | None:
    """Number of transformer blocks of a ViT image tower; None for ResNets (no depth setting)."""
    if getattr(model, "family", "vit") != "vit":
        return None
    blocks = getattr(getattr(getattr(model.model, "visual", None), "transformer", None), "resblocks", None)
    return len(blocks) if blocks is not None else None
