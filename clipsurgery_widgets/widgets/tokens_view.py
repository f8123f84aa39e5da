"""The TokenExplorer's view: the caption's words as coloured chips, a note on the best ones, and the map.

It draws what the controller hands it (an engine TokenAttribution by word, see
``TokenAttribution.by_word``; the ranking in use; the selected word; the clicked point) and reports
what is on screen with :meth:`TokenView.describe`. One chip per word: its BPE pieces and the rule
that makes its score (the mean of its pieces') are in the chip's tooltip.
Every caption-derived string reaches the page as text: chips are button labels and tooltips (DOM
text and attributes), the note is HTML-escaped and the map title goes through :func:`~.plotting.plotly_text`.
"""
from __future__ import annotations

import html
from typing import Callable

import ipywidgets as widgets
import numpy as np

from ..engine.attribution import RegionRanking, TokenAttribution
from ..engine.regions import display_step, patch_value_image
from ..engine.text.captions import CaptionWords
from ..figures.style import UNMARKED_COLOR
from ..figures.tokens import text_color, token_colors
from .plotting import HEAT_TRACE, MODEBAR_ROOM, PanelFigure, plotly_colorscale, plotly_text, subsample

SOURCES = {"global": "score at the global token", "max": "max over patches"}
_HOVER = "%s<br>normalised %%{z:.3f}<br>raw score %%{customdata:.4f}<br>x %%{x}, y %%{y}<extra></extra>"
#: how a word's score is made from its BPE pieces' scores (chip tooltips say it too).
WORD_SCORE = "mean of its BPE pieces' scores"


def heat_title(attribution: TokenAttribution | None, token: int | None) -> str:
    """What the map shows, as plain text: the whole caption's map or one word's."""
    if token is None or attribution is None:
        return "Map of the whole caption"
    return f"Map of {map_name(attribution, token)}"


def map_name(attribution: TokenAttribution | None, token: int | None) -> str:
    """Plain text naming whose map is shown, for its hover label: the caption or one word."""
    if token is None or attribution is None:
        return "whole caption"
    return f"“{attribution.tokens.texts[token]}”{_pieces_note(attribution, token)}"


def _pieces_note(a: TokenAttribution, token: int) -> str:
    count = len(_pieces(a, token))
    return f" (mean of {count} BPE pieces)" if count > 1 else ""


def chip_tooltip(a: TokenAttribution, token: int, score: float, where: str, rank: int, count: int) -> str:
    """A chip's hover text: the word, its BPE pieces, its score (and how it is made) and its rank."""
    text, parts = a.tokens.texts[token], _pieces(a, token)
    made = (f"BPE pieces: {' · '.join(parts)}; score = {WORD_SCORE}" if len(parts) > 1 else "one BPE piece")
    return f"{text} ({made})\nscore {score:+.4f} {where}, rank {rank} of {count}"


class TokenView:
    """Chips (one ``ipywidgets.Button`` per shown token), a note, and one image panel with its map.

    Args:
        on_chip: called with a chip's position (0 = first chip on screen) when it is clicked.
        on_image_click: ``(panel, x, y)`` in image pixels when the map is clicked.
    """

    def __init__(self, on_chip: Callable[[int], None], on_image_click: Callable[[int, float, float], None]):
        self._on_chip = on_chip
        self.panel = PanelFigure(1, on_click=on_image_click, top_margin=MODEBAR_ROOM)  # toolbar above the title
        self.panel.arrange(1, 1, height=420, width=None, right_margin=70)  # no width: follows its column
        # Shown while the chips are ranked at a clicked patch: says so, with the way back.
        self.reranked_note = widgets.HTML()
        self.reranked_note.add_class("csw-reranked-note")
        self.unrank = widgets.Button(description="back to whole-image ranking", icon="undo",
                                     tooltip="rank the words over the whole image again (keeps the map shown)",
                                     layout=widgets.Layout(width="auto"))
        self.unrank.add_class("csw-unrank")
        self.reranked = widgets.HBox([self.reranked_note, self.unrank],
                                     layout=widgets.Layout(flex_flow="row wrap", align_items="center",
                                                           display="none"))
        self.reranked.add_class("csw-reranked")
        self.chips_box = widgets.Box(layout=widgets.Layout(flex_flow="row wrap", align_items="center", width="100%",
                                                           min_height="34px"))
        self.chips_box.add_class("csw-chips")
        self.info = widgets.HTML()
        self.info.add_class("csw-token-info")
        self._pool: list[widgets.Button] = []
        self._chips: list[dict] = []  # what each chip on screen shows, in caption order
        self._selected: int | None = None
        self._maps: np.ndarray | None = None  # the caption map of the attribution on screen (identity key)
        self._version = 0
        self._heat_key: object = None
        self._map_token: int | None = None
        self._reranked_text: str | None = None

    # --- drawing -----------------------------------------------------------------------------

    def show_image(self, rgb: np.ndarray, key: object) -> None:
        """A new photo (RGB uint8 [H, W, 3]); its previous map and marker go."""
        self.panel.set_image(0, rgb, key=key, max_side=640)
        self.panel.set_marker(None)
        self._heat_key = None

    def show_chips(self, attribution: TokenAttribution | None, region: RegionRanking | None, selected: int | None,
                   point: tuple[float, float] | None, marking: str, cmap: str) -> None:
        """The shown words as chips coloured by ``region``'s ranking (or the attribution's), and the notes."""
        self._selected = selected
        self._show_reranked(attribution, point)
        if attribution is None:
            self._chips = []
            self.chips_box.children = ()
            self.info.value = ""
            return
        a = attribution
        scores, order = (a.scores, a.order) if region is None else (region.scores, region.order)
        colors = token_colors(scores, order, a.shown, marking, cmap)
        ranks = {int(token): rank for rank, token in enumerate(order, start=1)}
        where = "at the clicked patch" if region is not None else f"({SOURCES[a.score_source]})"
        visible = [int(t) for t in np.flatnonzero(a.shown)]
        while len(self._pool) < len(visible):
            self._pool.append(self._new_chip(len(self._pool)))
        chips = []
        for position, token in enumerate(visible):
            text, color, rank = a.tokens.texts[token], colors[token], ranks[token]
            tooltip = chip_tooltip(a, token, float(scores[token]), where, rank, len(order))
            chip = self._pool[position]
            first_piece = bool(a.tokens.space_before[token]) or a.tokens.is_special[token] or position == 0
            chip.description = text  # a DOM text node, not HTML: the caption's characters as typed
            chip.tooltip = tooltip
            chip.style.button_color = color or UNMARKED_COLOR
            chip.style.text_color = text_color(color)
            chip.style.font_weight = "bold" if token == selected else "normal"
            chip.layout.margin = f"2px 0px 2px {'6px' if first_piece else '0px'}"
            chip.layout.border = "2px solid #222" if token == selected else "2px solid transparent"
            chips.append(dict(token=token, text=text, tooltip=tooltip, color=color, score=float(scores[token]),
                              rank=rank, selected=token == selected, pieces=list(_pieces(a, token)),
                              tokens=list(_members(a, token))))
        self._chips = chips
        self.chips_box.children = tuple(self._pool[:len(visible)])
        self.info.value = _note(a, scores, order, colors, point)

    def show_heat(self, attribution: TokenAttribution, token: int | None, heat_side: int, cmap: str,
                  opacity: float) -> None:
        """The whole caption's map (``token`` None) or one token's, about ``heat_side`` pixels on the long side."""
        a = attribution
        if a.caption_map is not self._maps:  # new maps (a new options-only copy shares them)
            self._maps = a.caption_map
            self._version += 1
        step = display_step(a.image_size, heat_side)
        key = (self._version, token, step)
        with self.panel.fig.batch_update():
            if key != self._heat_key:
                heat = a.caption_map if token is None else a.image_map(token)
                values = a.caption_patch_scores if token is None else a.patch_scores[:, token]
                self.panel.set_heat(0, key, subsample(heat, step), step,
                                    customdata=patch_value_image(values, a.grid, a.image_size, step),
                                    hovertemplate=_HOVER % plotly_text(map_name(a, token)))
                self._heat_key, self._map_token = key, token
            self.show_style(cmap, opacity)
            self.panel.set_titles([plotly_text(heat_title(a, token))])  # plotly reads markup and templates

    def show_style(self, cmap: str, opacity: float) -> None:
        self.panel.set_style(0, plotly_colorscale(cmap), opacity, showscale=True)

    def show_marker(self, point: tuple[float, float] | None) -> None:
        self.panel.set_marker(point)

    def _show_reranked(self, a: TokenAttribution | None, point: tuple[float, float] | None) -> None:
        """The line that says the chips are ranked at a clicked patch (hidden otherwise)."""
        if a is None or point is None:
            self._reranked_text = None
            self.reranked_note.value = ""
            self.reranked.layout.display = "none"
            return
        row, col = divmod(a.patch_at(*point), a.grid[1])
        self._reranked_text = (f"Words ranked at the clicked patch (row {row}, col {col}), "
                               f"not over the whole image.")
        self.reranked_note.value = f'<span style="color:#8a5a00">{html.escape(self._reranked_text)}</span>'
        self.reranked.layout.display = None

    # --- reading -----------------------------------------------------------------------------

    @property
    def chips(self) -> list[dict]:
        """The chips on screen: token, text, tooltip, score, rank (1 = best), colour (None: unmarked), selected."""
        return [dict(chip) for chip in self._chips]

    @property
    def chip_buttons(self) -> list[widgets.Button]:
        """The chip buttons on screen, in caption order."""
        return self._pool[:len(self._chips)]

    def describe(self) -> dict:
        """What is on screen, as plain values (tests read this, never plotly traces).

        The image panel's description (:meth:`PanelFigure.describe`: titles as sent, marker,
        colour scale, opacity...) plus chips: [{token, text, tooltip, score, rank, color, selected,
        pieces, tokens}] (one per word: ``token`` is the word's index, ``pieces`` its BPE pieces'
        texts, ``tokens`` their token indices); chip_texts; selected: the selected word or None;
        map_token: whose map is drawn (None: the caption's); heat_values: the map values sent
        (float [h, w]) or None; hover: the map's hover template as sent; info: the note's HTML as
        sent; reranked: the "ranked at the clicked patch" line as plain text, None when hidden
        (its button, ``unrank``, goes back to the whole-image ranking).
        """
        out = self.panel.describe()
        heat = self.panel.trace(0, HEAT_TRACE)
        z = heat.z
        out.update(chips=self.chips, chip_texts=[c["text"] for c in self._chips], selected=self._selected,
                   map_token=self._map_token if self._heat_key is not None else None,
                   heat_values=np.array(z, dtype=np.float64) if z is not None and len(z) else None,
                   hover=heat.hovertemplate, info=self.info.value, reranked=self._reranked_text)
        return out

    def _new_chip(self, position: int) -> widgets.Button:
        chip = widgets.Button(layout=widgets.Layout(width="auto", height="28px", padding="0px 6px"))
        chip.add_class("csw-chip")
        chip.on_click(lambda button: self._on_chip(position))
        return chip


def _pieces(a: TokenAttribution, token: int) -> tuple[str, ...]:
    """The BPE pieces' texts of a unit (a by-word attribution's word; a token-level one's token)."""
    if isinstance(a.tokens, CaptionWords):
        return a.tokens.pieces[token]
    return (a.tokens.texts[token],)


def _members(a: TokenAttribution, token: int) -> tuple[int, ...]:
    return a.tokens.members[token] if isinstance(a.tokens, CaptionWords) else (token,)


def _note(a: TokenAttribution, scores: np.ndarray, order: np.ndarray, colors: list, point) -> str:
    """HTML: the best three tokens with their scores, how to use the view, and any truncation."""
    if len(order) == 0:
        return '<div style="color:#777">No words left to show: turn on punctuation or start/end tokens.</div>'
    if point is not None:
        row, col = divmod(a.patch_at(*point), a.grid[1])
        place = f"at patch (row {row}, col {col})"
    else:
        place = f"by {SOURCES[a.score_source]}"
    items = []
    for token in order[:3]:
        swatch = colors[token] or UNMARKED_COLOR
        items.append(f'<span style="white-space:nowrap"><span style="background:{swatch};'
                     f'color:{text_color(colors[token])};padding:0 4px;border-radius:3px">'
                     f'{html.escape(a.tokens.texts[token])}</span> {scores[token]:+.3f}</span>')
    dropped = (f'<div style="color:#a66">Caption too long: the last {a.tokens.dropped} tokens were dropped '
               f'(the text context holds 77).</div>' if a.tokens.dropped else "")
    return (f'<div style="font-size:0.9em;margin:4px 0">Best words {html.escape(place)}: '
            f'{" · ".join(items)}<br><span style="color:#777">Click a word for its map; click the image '
            f'to rank the words there. Hover a word for its BPE pieces and score.</span></div>{dropped}')
