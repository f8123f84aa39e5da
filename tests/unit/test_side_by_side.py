"""SideBySide: panes that take their share of the row, fill it, and stack when there is no room for both."""
import ipywidgets as widgets
import pytest

from clipsurgery_widgets.widgets.side_by_side import MIN_PANE_WIDTH, SideBySide


def test_panes_share_the_row_and_wrap_below_their_minimum_width():
    left, right = widgets.HTML("left"), widgets.HTML("right")
    pair = SideBySide(left, right)
    assert pair.panes == (left, right)
    assert pair.layout.flex_flow == "row wrap" and pair.layout.width == "100%"  # a wrapping row: panes stack
    for pane, child in zip(pair.children, (left, right)):
        assert pane.children == (child,)
        # Grows from the minimum to its share, never wider than the row, so two fit only above 2 x minimum.
        assert pane.layout.flex == f"1 1 {MIN_PANE_WIDTH}px" and pane.layout.max_width == "100%"
        assert pane.layout.min_width == "0"
        # A block: the widget inside takes the pane's width (a flex row would size it to its content).
        assert pane.layout.display == "block"
        assert "csw-side-by-side-pane" in pane._dom_classes
    assert "csw-side-by-side" in pair._dom_classes
    assert not any("%" in (pane.layout.width or "") for pane in pair.children)  # no fixed share


def test_the_minimum_pane_width_is_a_setting():
    pair = SideBySide(widgets.HTML("a"), widgets.HTML("b"), widgets.HTML("c"), min_pane_width=300)
    assert pair.min_pane_width == 300 and all(p.layout.flex == "1 1 300px" for p in pair.children)
    with pytest.raises(ValueError, match="min_pane_width"):
        SideBySide(widgets.HTML("a"), min_pane_width=0)


def test_without_static_views_there_is_no_png():
    assert SideBySide(widgets.HTML("a"), widgets.HTML("b")).static_png() is None


class _Pane(widgets.HTML):
    """A pane with a static copy, like an explorer's: a flat PNG of a given size and its width at 1x."""

    def __init__(self, size: tuple[int, int], colour: str, width_1x: int | None):
        super().__init__("pane")
        self.size, self.colour, self.width_1x, self.calls = size, colour, width_1x, 0

    def _static_copy(self):
        import io

        from PIL import Image

        self.calls += 1
        buffer = io.BytesIO()
        Image.new("RGB", self.size, self.colour).save(buffer, format="PNG")
        return buffer.getvalue(), ({"width": self.width_1x} if self.width_1x else None)


def test_the_static_copy_joins_the_panes_left_to_right():
    import io

    from PIL import Image

    pair = SideBySide(_Pane((40, 30), "red", 20), _Pane((60, 50), "blue", 30))
    png, metadata = pair._static_copy()
    joined = Image.open(io.BytesIO(png)).convert("RGB")
    assert joined.size == (100, 50) and metadata == {"width": 50}  # widths at 1x add up
    assert joined.getpixel((10, 10)) == (255, 0, 0) and joined.getpixel((70, 10)) == (0, 0, 255)
    assert joined.getpixel((10, 40)) == (255, 255, 255)  # top-aligned on white
    # A pane without a width at 1x: no width for the whole.
    assert SideBySide(_Pane((4, 3), "red", None), _Pane((6, 5), "blue", 3))._static_copy()[1] is None


def test_displaying_shows_the_panes_at_once_and_the_static_copy_later(monkeypatch):
    from clipsurgery_widgets.widgets import static_view

    shown = []
    monkeypatch.setattr(static_view, "show", lambda widget, bundle, static: shown.append((widget, bundle, static)))
    left, right = _Pane((4, 3), "red", None), _Pane((6, 5), "blue", None)
    pair = SideBySide(left, right)
    pair._ipython_display_()
    (widget, bundle, static), = shown
    assert widget is pair and "application/vnd.jupyter.widget-view+json" in bundle
    assert left.calls == right.calls == 0  # nothing waited for the panes' results
    assert static()[0] is not None and left.calls == right.calls == 1
