"""TokenExplorer: which words of a caption the image matches, and where (multimodal explanation)."""
from __future__ import annotations

import html
import warnings
from typing import Any, Sequence

import ipywidgets as widgets
import numpy as np

from ..engine.attribution import RegionRanking, TokenAttribution, token_attributions
from ..engine.errors import ClipSurgeryError
from ..engine.explainer import Explainer
from ..engine.regions import display_step, patch_value_image
from ..figures import tokens as figures_tokens
from .base import ExplorerWidget
from .plotting import PanelFigure, plotly_colorscale, subsample

SCORES = (("global token", "global"), ("max over patches", "max"))
MARKINGS = (("top three", "top3"), ("colour scale", "scale"))
SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
_WIDE = {"description_width": "initial"}


class TokenExplorer(ExplorerWidget):
    """Type a caption; see how much each of its tokens matches the image, and where.

    The caption's tokens appear as chips coloured by their score (the paper's top three in red,
    yellow and cyan, or every token on a colour scale; the score shows on hover), next to the
    image's heat map of the whole caption. Click a chip to see that token's map; click the image
    to rank the tokens at that patch; "whole caption" goes back.

    Args:
        explainer: an ``engine.Explainer`` (or a LoadedModel / model name, wrapped in one).
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        caption: the caption to explain.
        score: "global" (score at the image's global token) or "max" (max over patches).
        include_special: show the start/end tokens.   include_punctuation: show punctuation.
        marking: "top3" or "scale".   cmap, opacity: heat-map colours and weight over the image.
        size, depth: model input size and surgery depth.
        heat_side: heat maps are sent to the browser at about this many pixels on the long side.
    """

    def __init__(self, explainer: Any, image: Any = None, caption: str | None = None, *, score: str = "global",
                 include_special: bool = False, include_punctuation: bool = True, marking: str = "top3",
                 cmap: str = "jet", opacity: float = 0.6, size: int = 224, depth: int | None = None,
                 heat_side: int = 200):
        super().__init__()
        self.explainer = explainer if isinstance(explainer, Explainer) else Explainer(explainer)
        self.heat_side = heat_side
        self._rgb: np.ndarray | None = None
        self._image_version = 0
        self._attribution: TokenAttribution | None = None
        self._version = 0
        self._selected: int | None = None
        self._point: tuple[float, float] | None = None  # last clicked pixel (x, y)
        self._region: RegionRanking | None = None
        self._chip_pool: list[widgets.Button] = []
        self._chip_tokens: list[int] = []
        self._build_controls(caption or "", score, include_special, include_punctuation, marking, cmap, opacity,
                             size, depth)
        self._wire()
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")

    # --- Python API --------------------------------------------------------------------------

    caption = property(lambda self: self.controls["caption"].value,
                       lambda self, v: setattr(self.controls["caption"], "value", v),
                       doc="The caption being explained (set it to explain another).")
    score = property(lambda self: self.controls["score"].value,
                     lambda self, v: setattr(self.controls["score"], "value", _check(v, SCORES, "score")),
                     doc='Score source: "global" or "max".')
    include_special = property(lambda self: self.controls["special"].value,
                               lambda self, v: setattr(self.controls["special"], "value", bool(v)),
                               doc="Show the start/end tokens.")
    include_punctuation = property(lambda self: self.controls["punctuation"].value,
                                   lambda self, v: setattr(self.controls["punctuation"], "value", bool(v)),
                                   doc="Show tokens made only of punctuation.")
    marking = property(lambda self: self.controls["marking"].value,
                       lambda self, v: setattr(self.controls["marking"], "value", _check(v, MARKINGS, "marking")),
                       doc='Chip colours: "top3" (red, yellow, cyan) or "scale".')
    cmap = property(lambda self: self.controls["cmap"].value,
                    lambda self, v: setattr(self.controls["cmap"], "value", _check(v, CMAPS, "cmap")),
                    doc="Colour map of the heat map and of the chip colour scale.")
    opacity = property(lambda self: self.controls["opacity"].value,
                       lambda self, v: setattr(self.controls["opacity"], "value", float(v)),
                       doc="Weight of the heat map over the image, 0..1.")
    size = property(lambda self: self.controls["size"].value,
                    lambda self, v: setattr(self.controls["size"], "value", _check(int(v), SIZES, "size")),
                    doc="Model input size in pixels.")
    depth = property(lambda self: self.controls["depth"].value,
                     lambda self, v: setattr(self.controls["depth"], "value", int(v)), doc="Surgery depth.")

    @property
    def attribution(self) -> TokenAttribution | None:
        """The TokenAttribution on screen (None before the first one arrives)."""
        return self._attribution

    @property
    def selected_token(self) -> int | None:
        """Index of the token whose map is shown, or None for the whole caption's map."""
        return self._selected

    @property
    def region(self) -> RegionRanking | None:
        """The tokens' ranking at the last clicked patch, or None."""
        return self._region

    @property
    def chips(self) -> list[dict]:
        """The chips on screen: token index, text, score, rank (1 = best) and colour (None: unmarked)."""
        out = []
        for position, token in enumerate(self._chip_tokens):
            button = self._chip_pool[position]
            out.append(dict(token=token, text=button.description, tooltip=button.tooltip,
                            color=button.style.button_color if button.style.button_color != _PLAIN else None,
                            **self._score_of(token)))
        return out

    @property
    def chip_buttons(self) -> list[widgets.Button]:
        """The chip buttons on screen, in caption order (``.click()`` one to select its token)."""
        return self._chip_pool[:len(self._chip_tokens)]

    @property
    def heat_title(self) -> str:
        """What the heat map shows, as plain text."""
        if self._selected is None or self._attribution is None:
            return "Map of the whole caption"
        return f"Map of token “{self._attribution.tokens.texts[self._selected]}”"

    @property
    def heat(self) -> np.ndarray | None:
        """float32 [H, W] the map on screen (None before the first attribution)."""
        a = self._attribution
        if a is None:
            return None
        return a.caption_map if self._selected is None else a.image_map(self._selected)

    @property
    def current_figure(self):
        """The plotly FigureWidget with the image and its heat map."""
        return self._panel.fig

    def select_token(self, token: int | None) -> None:
        """Show token ``token``'s map (what clicking its chip does); None shows the caption's map."""
        self.wait(self.display_timeout)
        self._select(token)

    def _select(self, token: int | None) -> None:
        with self._lock:
            a = self._attribution
            if a is None:
                raise ClipSurgeryError("No tokens yet: set an image and a caption first.")
            if token is not None and not 0 <= int(token) < len(a.tokens):
                raise IndexError(f"Token index {token} out of range: the caption has {len(a.tokens)} tokens.")
            self._selected = None if token is None else int(token)
            self._render_chips()
            self._render_heat()

    def click(self, x: float, y: float) -> RegionRanking:
        """Do what a click at image pixel (x, y) does: rank the tokens at the patch under it."""
        self.wait(self.display_timeout)
        try:
            self._on_image_click(0, x, y)
        except Exception as exc:
            self._show_error(exc, "reading the clicked point")
            raise
        return self._region

    def reset(self) -> None:
        """Back to the whole caption: its map, and the tokens ranked over the whole image."""
        with self._lock:
            self._selected = None
            self._point = None
            self._region = None
            self._panel.set_marker(None)
            self._render_chips()
            self._render_heat()

    def figure(self, pairs: Sequence[tuple[Any, str]] | None = None, ncols: int = 3):
        """A static figure in the style of the paper: caption with marked tokens above the heat map.

        Without arguments: the current view. With ``pairs`` [(image, caption), ...]: one panel per
        pair, explained with the widget's settings, ``ncols`` per row.
        """
        if pairs is None:
            return super().figure()
        items = []
        for image, caption in pairs:
            rgb = self.explainer.prepare_image(image)
            items.append((rgb, token_attributions(self.explainer, rgb, caption, self.score, self.include_special,
                                                  self.include_punctuation, self.size, self.depth)))
        return figures_tokens.token_figure(items, ncols=ncols, marking=self.marking, cmap=self.cmap,
                                           opacity=self.opacity)

    # --- controls ----------------------------------------------------------------------------

    def _build_controls(self, caption, score, include_special, include_punctuation, marking, cmap, opacity,
                        size, depth) -> None:
        blocks = _num_blocks(self.explainer.model)
        c = self.controls = {
            "caption": widgets.Text(value=caption, description="Caption", continuous_update=False, style=_WIDE,
                                    placeholder="type a caption and press Enter, e.g. a cat lying on a sofa",
                                    layout=widgets.Layout(flex="1 1 420px")),
            "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
            "score": widgets.ToggleButtons(options=SCORES, value=_check(score, SCORES, "score"),
                                           tooltips=["score at the image's global token",
                                                     "highest score over the patches"],
                                           style={"button_width": "140px"}),
            "special": widgets.Checkbox(value=bool(include_special), description="start/end tokens", indent=False,
                                        layout=widgets.Layout(width="auto")),
            "punctuation": widgets.Checkbox(value=bool(include_punctuation), description="punctuation",
                                            indent=False, layout=widgets.Layout(width="auto")),
            "marking": widgets.ToggleButtons(options=MARKINGS, value=_check(marking, MARKINGS, "marking"),
                                             style={"button_width": "105px"}),
            "cmap": widgets.Dropdown(options=CMAPS, value=_check(cmap, CMAPS, "cmap"), description="Colours",
                                     style=_WIDE, layout=widgets.Layout(width="160px")),
            "opacity": widgets.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="Opacity",
                                           style=_WIDE, layout=widgets.Layout(width="240px")),
            "size": widgets.Dropdown(options=[(str(s), s) for s in SIZES], value=_check(int(size), SIZES, "size"),
                                     description="Input size", style=_WIDE, layout=widgets.Layout(width="160px")),
            "depth": widgets.IntSlider(value=depth or min(6, blocks or 6), min=1, max=blocks or 12,
                                       description="Surgery depth", style=_WIDE, disabled=blocks is None,
                                       continuous_update=False, layout=widgets.Layout(width="260px")),
            "whole": widgets.Button(description="whole caption", icon="undo",
                                    tooltip="show the caption's map and rank tokens over the whole image"),
        }
        for name, control in c.items():  # stable CSS hooks for tests and custom styling
            control.add_class(f"csw-{name}")
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self._chips_box = widgets.Box(layout=widgets.Layout(flex_flow="row wrap", align_items="center",
                                                            width="100%", min_height="34px"))
        self._chips_box.add_class("csw-chips")
        self._info_html = widgets.HTML()
        self._info_html.add_class("csw-token-info")
        self._panel = PanelFigure(1, on_click=self._guarded(self._on_image_click, "reading the clicked point"))
        self._panel.arrange(1, 1, height=420, right_margin=70)
        left = widgets.VBox([self._chips_box, self._info_html, c["whole"]],
                            layout=widgets.Layout(flex="1 1 320px", min_width="260px"))
        right = widgets.Box([self._panel.fig], layout=widgets.Layout(flex="1 1 440px", min_width="300px"))
        right.add_class("csw-view")
        right.add_class("csw-plot")
        self.children = [
            widgets.HBox([c["caption"], c["upload"]], layout=wrap),
            widgets.HBox([c["score"], c["special"], c["punctuation"]], layout=wrap),
            widgets.HBox([c["marking"], c["cmap"], c["opacity"], c["size"], c["depth"]], layout=wrap),
            self._status_html, self._error_html,
            widgets.HBox([left, right], layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start",
                                                               width="100%")),
        ]

    def _wire(self) -> None:
        c = self.controls
        recompute = self._guarded(lambda change: self._request(), "reading the settings")
        for name in ("caption", "size", "depth"):
            c[name].observe(recompute, names="value")
        rerank = self._guarded(lambda change: self._apply_options(), "changing the token options")
        for name in ("score", "special", "punctuation"):
            c[name].observe(rerank, names="value")
        recolour = self._guarded(lambda change: self._restyle(), "drawing the view")
        for name in ("marking", "cmap", "opacity"):
            c[name].observe(recolour, names="value")
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        c["whole"].on_click(self._guarded(lambda button: self.reset(), "showing the caption's map"))

    # --- requests ----------------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock:
            self._rgb = rgb
            self._image_version += 1
            self._attribution = None
            self._point = None
            self._region = None
            self._panel.set_image(0, rgb, key=self._image_version, max_side=640)
            self._panel.set_marker(None)
            self._render_chips()
        self._request(new_image=True)

    def _request(self, new_image: bool = False) -> None:
        if self._rgb is None:
            return
        rgb, caption, size, depth = self._rgb, self.caption, self.size, self.depth
        if new_image and not caption.strip():
            self._set_status("Type a caption and press Enter.")  # nothing typed yet: not an error
            return
        score, special, punctuation = self.score, self.include_special, self.include_punctuation

        def work() -> TokenAttribution:
            with warnings.catch_warnings():  # truncation is reported in the status line instead
                warnings.simplefilter("ignore", UserWarning)
                return token_attributions(self.explainer, rgb, caption, score, special, punctuation, size, depth)

        self._submit(work=work, apply=self._apply, busy_text=f"Explaining the caption at {size} px…",
                     doing="explaining the caption", done_text=_done_text)

    def _apply(self, attribution: TokenAttribution) -> None:
        previous = self._attribution
        same_caption = previous is not None and np.array_equal(previous.tokens.ids, attribution.tokens.ids)
        # The options may have changed while this was computed: apply the current ones.
        self._attribution = attribution.with_options(self.score, self.include_special, self.include_punctuation)
        self._version += 1
        if not same_caption:
            self._selected = None
        self._rerank_region()
        self._render_heat()
        self._render_chips()  # last: new chips on screen mean the whole view is up to date

    def _apply_options(self) -> None:
        with self._lock:
            if self._attribution is None:
                return
            self._attribution = self._attribution.with_options(self.score, self.include_special,
                                                               self.include_punctuation)
            self._rerank_region()
            self._render_chips()

    def _rerank_region(self) -> None:
        if self._point is not None and self._attribution is not None:
            # from the pixel, not a patch index: a new input size changes the grid
            self._region = self._attribution.tokens_at(self._attribution.patch_at(*self._point))

    def _on_image_click(self, panel: int, x: float, y: float) -> None:
        with self._lock:
            a = self._attribution
            if a is None:
                raise ClipSurgeryError("No tokens yet: set an image and a caption first.")
            a.patch_at(x, y)  # refuses points outside the image before anything changes
            self._point = (float(x), float(y))
            self._rerank_region()
            self._panel.set_marker((x, y))
            self._render_chips()
            self._clear_error()

    # --- drawing -----------------------------------------------------------------------------

    def _ranking(self) -> tuple[np.ndarray, np.ndarray]:
        a = self._attribution
        return (a.scores, a.order) if self._region is None else (self._region.scores, self._region.order)

    def _score_of(self, token: int) -> dict:
        scores, order = self._ranking()
        rank = int(np.flatnonzero(order == token)[0]) + 1 if token in order else None
        return dict(score=float(scores[token]), rank=rank)

    def _render_chips(self) -> None:
        a = self._attribution
        if a is None:
            self._chip_tokens = []
            self._chips_box.children = ()
            self._info_html.value = ""
            return
        scores, order = self._ranking()
        colors = figures_tokens.token_colors(scores, order, a.shown, self.marking, self.cmap)
        visible = [int(t) for t in np.flatnonzero(a.shown)]
        while len(self._chip_pool) < len(visible):
            self._chip_pool.append(self._new_chip(len(self._chip_pool)))
        where = "at the clicked patch" if self._region is not None else f"({_SOURCE[a.score_source]})"
        for position, token in enumerate(visible):
            chip = self._chip_pool[position]
            rank = int(np.flatnonzero(order == token)[0]) + 1
            first_piece = bool(a.tokens.space_before[token]) or a.tokens.is_special[token] or position == 0
            # Button descriptions are DOM text nodes, not HTML: the caption's text shows as typed.
            chip.description = a.tokens.texts[token]
            chip.tooltip = (f"{a.tokens.texts[token]}: score {scores[token]:+.4f} {where}, "
                            f"rank {rank} of {len(order)}")
            chip.style.button_color = colors[token] or _PLAIN
            chip.style.text_color = figures_tokens.text_color(colors[token])
            chip.style.font_weight = "bold" if token == self._selected else "normal"
            chip.layout.margin = f"2px 0px 2px {'6px' if first_piece else '0px'}"
            chip.layout.border = "2px solid #222" if token == self._selected else "2px solid transparent"
        self._chip_tokens = visible
        self._chips_box.children = tuple(self._chip_pool[:len(visible)])
        self._info_html.value = self._info(scores, order, colors)

    def _new_chip(self, position: int) -> widgets.Button:
        chip = widgets.Button(layout=widgets.Layout(width="auto", height="28px", padding="0px 6px"))
        chip.add_class("csw-chip")
        chip.on_click(self._guarded(lambda button, p=position: self._on_chip(p), "showing the token's map"))
        return chip

    def _on_chip(self, position: int) -> None:
        token = self._chip_tokens[position]
        self._select(None if token == self._selected else token)  # a second click goes back to the caption

    def _info(self, scores: np.ndarray, order: np.ndarray, colors: list) -> str:
        a = self._attribution
        if len(order) == 0:
            return '<div style="color:#777">No tokens left to show: turn on punctuation or start/end tokens.</div>'
        if self._point is not None:
            row, col = divmod(a.patch_at(*self._point), a.grid[1])
            place = f"at patch (row {row}, col {col})"
        else:
            place = f"by {_SOURCE[a.score_source]}"
        items = []
        for rank, token in enumerate(order[:3], start=1):
            swatch = colors[token] or _PLAIN
            items.append(f'<span style="white-space:nowrap"><span style="background:{swatch};'
                         f'color:{figures_tokens.text_color(colors[token])};padding:0 4px;border-radius:3px">'
                         f'{html.escape(a.tokens.texts[token])}</span> {scores[token]:+.3f}</span>')
        dropped = (f'<div style="color:#a66">Caption too long: the last {a.tokens.dropped} tokens were dropped '
                   f'(the text context holds 77).</div>' if a.tokens.dropped else "")
        return (f'<div style="font-size:0.9em;margin:4px 0">Best tokens {html.escape(place)}: '
                f'{" · ".join(items)}<br><span style="color:#777">Click a token for its map; click the image '
                f'to rank the tokens there.</span></div>{dropped}')

    def _render_heat(self) -> None:
        a = self._attribution
        if a is None:
            return
        step = display_step(a.image_size, self.heat_side)
        heat = self.heat
        values = a.caption_patch_scores if self._selected is None else a.patch_scores[:, self._selected]
        with self._panel.fig.batch_update():
            self._panel.set_heat(0, (self._version, self._selected, step), subsample(heat, step), step,
                                 customdata=patch_value_image(values, a.grid, a.image_size, step),
                                 hovertemplate="normalised %{z:.3f}<br>raw score %{customdata:.4f}"
                                               "<br>x %{x}, y %{y}<extra></extra>")
            self._panel.set_style(0, plotly_colorscale(self.cmap), self.opacity, showscale=True)
            self._panel.set_titles([html.escape(self.heat_title)])  # plotly titles accept HTML tags

    def _restyle(self) -> None:
        with self._lock:
            self._render_chips()
            if self._attribution is not None:
                self._panel.set_style(0, plotly_colorscale(self.cmap), self.opacity, showscale=True)

    # --- static figure -----------------------------------------------------------------------

    def _render_figure(self):
        a, rgb = self._attribution, self._rgb
        if a is None or rgb is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image and a caption, and wait for the tokens.")
        return figures_tokens.token_figure((rgb, a), marking=self.marking, cmap=self.cmap, opacity=self.opacity,
                                           tokens=[self._selected], regions=[self._region])


_PLAIN = "#eeeeee"  # chips outside the marking
_SOURCE = {"global": "score at the global token", "max": "max over patches"}


def _done_text(attribution: TokenAttribution, seconds: float) -> str:
    shown = int(attribution.shown.sum())
    text = f"{shown} tokens shown of {len(attribution.tokens)}, grid {attribution.grid[0]}x{attribution.grid[1]}"
    if attribution.tokens.dropped:
        text += f" · caption truncated: {attribution.tokens.dropped} tokens dropped"
    return f"{text} · {seconds:.2f} s"


def _check(value: Any, allowed: Sequence, what: str) -> Any:
    keys = [k for _, k in allowed] if allowed and isinstance(allowed[0], tuple) else list(allowed)
    if value not in keys:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(map(str, keys))}.")
    return value


def _num_blocks(model: Any) -> int | None:
    """Number of transformer blocks of a ViT image tower; None for ResNets (no depth setting)."""
    if getattr(model, "family", "vit") != "vit":
        return None
    blocks = getattr(getattr(getattr(model.model, "visual", None), "transformer", None), "resblocks", None)
    return len(blocks) if blocks is not None else None
