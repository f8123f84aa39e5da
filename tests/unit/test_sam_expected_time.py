"""SamWidget: SAM's embedding starts in the background when an image is shown, and its line shows the expected time."""
from __future__ import annotations

import threading

import ipywidgets as widgets
import numpy as np
import pytest

from clipsurgery_widgets.engine.sam.refiner import SamRefiner, build_tiny_sam
from clipsurgery_widgets.widgets.sam import SamWidget
from clipsurgery_widgets.widgets.sam_controls import EmbeddingLine


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def line(clock) -> EmbeddingLine:
    return EmbeddingLine(widgets.HTML(), widgets.FloatProgress(), clock=clock)


def test_expected_time_from_the_rate_so_far():
    clock = FakeClock()
    sam = line(clock)
    sam.started()
    assert "about" not in sam.text  # nothing measured yet
    clock.now += 2.0
    sam.progress(0.05, "encoding")
    assert "left" not in sam.text  # too early to extrapolate, no earlier run
    clock.now += 4.0  # 6 s for a quarter: 18 s to go
    sam.progress(0.25, "encoding")
    assert sam.remaining(0.25) == pytest.approx(18.0)
    assert "about 18 s left" in sam.text and "25%" in sam.text
    clock.now += 94.0  # 100 s for half: 100 s to go
    sam.progress(0.5, "encoding")
    assert "about 1 min 40 s left" in sam.text


def test_expected_time_from_the_previous_image_before_progress():
    clock = FakeClock()
    sam = line(clock)
    sam.started()
    clock.now += 12.0
    sam.ready(12.0)
    assert "12.0 s" in sam.text and sam.last_seconds == 12.0
    sam.started()
    assert "about 12 s, as the last image" in sam.text
    clock.now += 5.0
    sam.progress(0.0, "encoding")
    assert "about 7 s left" in sam.text


class SlowRefiner(SamRefiner):
    """Reports half of the work done, then waits for the test."""

    def __init__(self, sam) -> None:
        super().__init__(sam)
        self.gate, self.halfway = threading.Event(), threading.Event()

    def set_image(self, image, progress=None):
        if progress is not None:
            progress(0.0, "encoding")
            progress(0.5, "encoding")
        self.halfway.set()
        assert self.gate.wait(30)
        return super().set_image(image, progress)


def test_embedding_starts_when_the_image_is_shown_and_shows_time_left(explainer):
    refiner = SlowRefiner(build_tiny_sam())
    rgb = np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    w = SamWidget(explainer, refiner)  # no image yet: nothing to embed
    assert not refiner.halfway.is_set()
    w.image = rgb  # shown, no click, no text: the embedding starts in the background
    assert refiner.halfway.wait(10)
    assert "left" in w.sam_status and "50%" in w.sam_status, w.sam_status
    assert w.controls["sam_progress"].layout.display is None
    refiner.gate.set()
    assert w.wait(30) and w.sam_ready and w.error is None, w.error
    assert "SAM ready" in w.sam_status
