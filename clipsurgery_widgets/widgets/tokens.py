"""TokenExplorer: which words of a caption the image matches, and where (docs/algorithms.md#token-attribution).

The controller: public settings as traits (one validation rule, see :mod:`.state`), the engine call
as the named job "explain", and the routes of chip and image clicks. Drawing is in
:mod:`.tokens_view`, the controls in :mod:`.tokens_controls`. The widget shows one chip per word
(``TokenAttribution.by_word``: a word's scores are the mean of its BPE pieces'), and its indices
(``selected_token``, a chip's ``"token"``) count those words, 0 being the start token.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import traitlets

from ..engine.attribution import (SCORE_SOURCES, RegionRanking, TokenAttribution, token_attributions)
from ..engine.errors import TextInputError
from ..engine.explainer import Explainer
from ..engine.text.captions import tokenize_caption
from ..figures.layout import Layout, apply_layout
from ..figures.style import DEFAULT_CMAP, DEFAULT_OPACITY
from ..figures.tokens import MARKINGS, token_figure
from .base import ExplorerWidget
from .jobs import Job
from .state import (Choice, ColourMap, Flag, InputSize, Integer, InvalidStateError, Number, Text, invalid, link_control)
from .tokens_controls import arrange, build_controls, offer, size_label
from .tokens_view import TokenView, heat_title

_LINKS = (("caption", "caption"), ("score", "score"), ("include_special", "special"),
          ("include_punctuation", "punctuation"), ("marking", "marking"), ("cmap", "cmap"), ("opacity", "opacity"),
          ("size", "size"), ("depth", "depth"))  # (trait, control)
_NO_TOKENS = "No tokens yet: set an image and a caption first (and wait for them with .wait())."


class TokenExplorer(ExplorerWidget):
    """Type a caption; see how much each of its words matches the image, and where.

    The caption's words appear as chips coloured by their score (the paper's top three in red,
    yellow and cyan, or every word on a colour scale; the score, the word's BPE pieces and its rank
    show on hover), next to the image's heat map of the whole caption. A word of several BPE
    pieces ("whis" + "kers") is one chip whose score and map are the mean of its pieces'. Click a
    chip to see that word's map; click the image to rank the words at that patch ("back to
    whole-image ranking" undoes that); "whole caption" goes back to the caption's map and ranking.

    Args:
        explainer: an ``engine.Explainer`` (or a LoadedModel / model name, wrapped in one).
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        caption: the caption to explain. The other keywords set the traits of the same name.
    """

    caption = Text("", help="The caption being explained (set it to explain another).")
    score = Choice(SCORE_SOURCES, help='Score source: "global" (the global token) or "max" (max over patches).')
    include_special = Flag(False, help="Show and rank the start/end tokens.")
    include_punctuation = Flag(True, help="Show and rank tokens made only of punctuation.")
    marking = Choice(MARKINGS, help='Chip colours: "top3" (red, yellow, cyan) or "scale" (every chip).')
    cmap = ColourMap(DEFAULT_CMAP, help="Matplotlib colour map of the heat map and of the chip colour scale.")
    opacity = Number(DEFAULT_OPACITY, low=0.0, high=1.0, help="Weight of the heat map over the image.")
    size = InputSize(224, help="Model input size: an int S or (H, W), whole patches (like the engine).")
    depth = Integer(6, low=1, help="Surgery depth: 1 to the ViT's number of blocks (a ResNet ignores it).")
    heat_side = Integer(200, low=1, help="Heat maps are sent at about this many pixels on the long side.")
    selected_token = Integer(None, low=0, allow_none=True,
                             help="Word (chip) whose map is shown, by index (0 = start token); None: the caption's.")
    point = traitlets.Any(None, allow_none=True, help="Clicked image pixel (x, y) where words are ranked, or None.")

    def __init__(self, explainer: Any, image: Any = None, caption: str | None = None, *, score: str = "global",
                 include_special: bool = False, include_punctuation: bool = True, marking: str = "top3",
                 cmap: str = DEFAULT_CMAP, opacity: float = DEFAULT_OPACITY, size: int | tuple[int, int] = 224,
                 depth: int | None = None, heat_side: int = 200):
        self.explainer = explainer if isinstance(explainer, Explainer) else Explainer(explainer)
        self._blocks = self.explainer.model.num_blocks
        self._attribution: TokenAttribution | None = None
        self._region: RegionRanking | None = None
        self._image_version = 0
        self._held = 0
        super().__init__()
        settings = dict(caption=caption or "", score=score, include_special=include_special,
                        include_punctuation=include_punctuation, marking=marking, cmap=cmap, opacity=opacity,
                        size=size, depth=min(6, self._blocks or 6) if depth is None else depth, heat_side=heat_side)
        for name, value in settings.items():
            setattr(self, name, value)
        self.view = TokenView(on_chip=self._guarded(self.click_chip, "showing the token's map"),
                              on_image_click=self._guarded(lambda panel, x, y: self.click(x, y, wait=False),
                                                           "reading the clicked point"))
        self.controls = build_controls(self.caption, self._blocks, self.depth)
        self._wire()
        self.children = arrange(self.controls, self._status_html, self._error_html, self.view.chips_box,
                                self.view.info, self.view.panel.fig, self.view.reranked)
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")

    # --- validation beyond each trait's own rule -----------------------------------------------

    @traitlets.validate("caption")
    def _valid_caption(self, proposal: dict) -> str:
        """A caption the engine can tokenize ("" means none yet); checked here so that a refused one
        leaves the widget as it was instead of starting a request that can only fail."""
        return _tokenizable(self, proposal["value"])

    @traitlets.validate("depth")
    def _valid_depth(self, proposal: dict) -> int:
        if self._blocks is not None and proposal["value"] > self._blocks:
            raise invalid(self, "depth", proposal["value"], f"a whole number from 1 to {self._blocks} (the model's "
                                                            f"number of blocks)")
        return proposal["value"]

    @traitlets.validate("selected_token")
    def _valid_token(self, proposal: dict) -> int:  # None never gets here: it is always allowed
        a = self._attribution
        if a is None:
            raise InvalidStateError(_NO_TOKENS)
        if proposal["value"] >= len(a.tokens):
            last = len(a.tokens) - 1
            raise invalid(self, "selected_token", proposal["value"],
                          f"None or a word index from 0 to {last} (0 = start, {last} = end; a chip's \"token\")")
        return proposal["value"]

    @traitlets.validate("point")
    def _valid_point(self, proposal: dict) -> tuple[float, float]:
        return _image_pixel(self, proposal["value"])

    # --- Python API --------------------------------------------------------------------------

    @property
    def attribution(self) -> TokenAttribution | None:
        """The TokenAttribution on screen, by word (``TokenAttribution.by_word``; None before the first)."""
        return self._attribution

    @property
    def region(self) -> RegionRanking | None:
        """The words' ranking at the clicked point, or None."""
        return self._region

    @property
    def chips(self) -> list[dict]:
        """The chips on screen, one per word: "token" (the word's index), text, tooltip, score, rank
        (1 = best), colour (None: unmarked), selected, pieces (its BPE pieces), tokens (their indices)."""
        return self.view.chips

    @property
    def chip_buttons(self) -> list:
        """The chip buttons on screen, in caption order (``.click()`` one to click it)."""
        return self.view.chip_buttons

    @property
    def heat_title(self) -> str:
        """What the heat map shows, as plain text."""
        return heat_title(self._attribution, self.selected_token)

    @property
    def heat(self) -> np.ndarray | None:
        """float32 [H, W] the map on screen (None before the first attribution)."""
        a = self._attribution
        if a is None:
            return None
        return a.caption_map if self.selected_token is None else a.image_map(self.selected_token)

    @property
    def current_figure(self):
        """The plotly FigureWidget with the image and its heat map."""
        return self.view.panel.fig

    def select_token(self, token: int | None) -> None:
        """Wait for pending work, then show word ``token``'s map (a chip's "token"); None: the caption's."""
        self.wait(self.display_timeout)
        self.selected_token = token

    def click_chip(self, position: int) -> None:
        """What clicking the ``position``-th chip on screen does: show its word's map (a second
        click on the selected chip goes back to the caption's map)."""
        with self._lock:
            chips = self.view.chips
            if not 0 <= position < len(chips):
                raise InvalidStateError(f"There is no chip {position}: {len(chips)} chips are on screen.")
            token = chips[position]["token"]
            self.selected_token = None if token == self.selected_token else token

    def click(self, x: float, y: float, wait: bool = True) -> RegionRanking:
        """What a click at image pixel (x, y) does: rank the words at the patch under it.

        Waits for pending work first unless ``wait`` is False (the real click handler acts on
        the view on screen, as a person does).
        """
        if wait:
            self.wait(self.display_timeout)
        with self._lock:
            try:
                self.point = (x, y)
            except InvalidStateError as exc:
                self._show_error(exc, "reading the clicked point")
                raise
            self._clear_error()
            return self._region

    def reset(self) -> None:
        """Back to the whole caption: its map, and the words ranked over the whole image."""
        with self._lock, self._hold():
            self.selected_token = None
            self.point = None

    def unrank(self) -> None:
        """What "back to whole-image ranking" does: rank the words over the whole image again (the
        map shown stays)."""
        with self._lock:
            self.point = None

    def figure(self, pairs: Sequence[tuple[Any, str]] | None = None, ncols: int = 3, layout: Layout = None):
        """A static figure in the style of the paper: caption with marked tokens above the heat map.

        Without arguments: the current view. With ``pairs`` [(image, caption), ...]: one panel per
        pair, explained with the widget's settings, ``ncols`` per row. ``layout``: a size preset
        ("column", "page", inches), as for every widget's ``figure()``.
        """
        if pairs is None:
            return super().figure(layout=layout)
        items = []
        for image, caption in pairs:
            rgb = self.explainer.prepare_image(image)
            items.append((rgb, token_attributions(self.explainer, rgb, caption, self.score, self.include_special,
                                                  self.include_punctuation, self.size, self.depth).by_word()))
        return apply_layout(token_figure(items, ncols=ncols, marking=self.marking, cmap=self.cmap,
                                         opacity=self.opacity), layout)

    # --- wiring ------------------------------------------------------------------------------

    def _wire(self) -> None:
        c = self.controls
        # Before the links: a custom size or colour map becomes an option before the dropdown shows it.
        offer(c["size"], self.size, size_label(self.size))
        offer(c["cmap"], self.cmap, self.cmap)
        self.observe(lambda change: offer(c["size"], change["new"], size_label(change["new"])), names="size")
        self.observe(lambda change: offer(c["cmap"], change["new"], change["new"]), names="cmap")
        if self._blocks is None:  # a ResNet's (ignored) depth may be any whole number: widen the slider
            self.observe(lambda change: setattr(c["depth"], "max", max(c["depth"].max, change["new"])),
                         names="depth")
        for name, control in _LINKS:
            link_control(self, name, c[control])
        self.observe(self._guarded(lambda change: self._request(), "reading the settings"),
                     names=["caption", "size", "depth"])
        self.observe(self._guarded(lambda change: self._apply_options(), "changing the token options"),
                     names=["score", "include_special", "include_punctuation"])
        self.observe(self._guarded(lambda change: self._render(), "drawing the view"),
                     names=["marking", "cmap", "opacity", "heat_side", "selected_token", "point"])
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        c["whole"].on_click(self._guarded(lambda button: self.reset(), "showing the caption's map"))
        self.view.unrank.on_click(self._guarded(lambda button: self.unrank(), "ranking over the whole image"))

    # --- requests ----------------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock, self._hold():
            self._rgb = rgb
            self._image_version += 1
            self._attribution = None
            self.point = None
            self.view.show_image(rgb, key=self._image_version)
        self._request(new_image=True)

    def _request(self, new_image: bool = False) -> None:
        if self._rgb is None:
            return
        rgb, caption, size, depth = self._rgb, self.caption, self.size, self.depth
        if new_image and not caption.strip():
            self._set_status("Type a caption and press Enter.")  # nothing typed yet: not an error
            return
        score, special, punctuation = self.score, self.include_special, self.include_punctuation

        def work(job: Job) -> TokenAttribution:
            with warnings.catch_warnings():  # truncation is reported in the status line instead
                warnings.simplefilter("ignore", UserWarning)
                return token_attributions(self.explainer, rgb, caption, score, special, punctuation, size,
                                          depth).by_word()

        self.submit("explain", work, self._apply, busy_text=f"Explaining the caption at {size_label(size)} px…",
                    doing="explaining the caption", done_text=_done_text)

    def _apply(self, attribution: TokenAttribution) -> None:
        previous = self._attribution
        same_caption = previous is not None and previous.caption == attribution.caption
        with self._hold():
            # The options may have changed while this was computed: apply the current ones.
            self._attribution = attribution.with_options(self.score, self.include_special, self.include_punctuation)
            if not same_caption:
                self.selected_token = None

    def _apply_options(self) -> None:
        with self._lock:
            if self._attribution is not None:
                self._attribution = self._attribution.with_options(self.score, self.include_special,
                                                                   self.include_punctuation)
            self._render()

    # --- drawing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """Change several pieces of state, then draw once."""
        with self._lock:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            self._render()

    def _render(self) -> None:
        with self._lock:
            if self._held:
                return
            a, point = self._attribution, self.point
            # from the pixel, not a patch index: a new input size changes the grid
            self._region = None if a is None or point is None else a.tokens_at(a.patch_at(*point))
            if a is not None:
                self.view.show_heat(a, self.selected_token, self.heat_side, self.cmap, self.opacity)
            self.view.show_marker(point)
            # last: new chips on screen mean the whole view is up to date
            self.view.show_chips(a, self._region, self.selected_token, point, self.marking, self.cmap)

    def _render_figure(self):
        a, rgb = self._attribution, self._rgb
        if a is None or rgb is None:
            raise InvalidStateError("Nothing to draw yet: set an image and a caption, and wait for the tokens.")
        return token_figure((rgb, a), marking=self.marking, cmap=self.cmap, opacity=self.opacity,
                            tokens=[self.selected_token], regions=[self._region])


def _image_pixel(widget: TokenExplorer, value: Any) -> tuple[float, float]:
    """``value`` as an (x, y) pixel inside the attribution's image, else InvalidStateError."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(_finite(v) for v in value)):
        raise invalid(widget, "point", value, "None or an image pixel (x, y)")
    if widget.attribution is None:
        raise InvalidStateError(_NO_TOKENS)
    x, y = float(value[0]), float(value[1])
    try:
        widget.attribution.patch_at(x, y)
    except ValueError as exc:
        raise InvalidStateError(f"{type(widget).__name__}.point = {value!r} is not valid: {exc} "
                                f"Pick a pixel inside the image.") from None
    return x, y


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _tokenizable(widget: TokenExplorer, value: str) -> str:
    """``value`` if the engine can tokenize it ("" means no caption yet), else InvalidStateError."""
    if value:
        model = widget.explainer.model
        try:
            with warnings.catch_warnings():  # truncation is reported in the status line instead
                warnings.simplefilter("ignore", UserWarning)
                tokenize_caption(model.tokenizer, value, model.context_length)
        except TextInputError as exc:
            raise InvalidStateError(f"{type(widget).__name__}.caption = {value!r} is not valid: {exc}") from None
    return value


def _done_text(attribution: TokenAttribution, seconds: float) -> str:
    """The status line once the words are in (``attribution`` by word)."""
    shown, pieces = int(attribution.shown.sum()), len(attribution.tokens.tokens)
    text = f"{shown} words shown ({pieces} BPE tokens with start/end), grid {attribution.grid[0]}x{attribution.grid[1]}"
    if attribution.tokens.dropped:
        text += f" · caption truncated: {attribution.tokens.dropped} tokens dropped"
    return f"{text} · {seconds:.2f} s"
