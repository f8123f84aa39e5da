"""HeatmapExplorer responsiveness, server side: ViT-B-16 with random weights on the CPU, 224 px.

Measures, in one run, from setting a trait (what a keystroke or an upload does) until the widget
has sent its updates to the (absent) browser:
  * a cached label toggled off and on (image tokens and label features cached): target < 300 ms
    in the browser, so the server-side share is printed as a ratio to that budget;
  * a new image whose labels are already cached (one image forward pass);
  * the first explanation (labels encoded with the 85-prompt ensemble, then the image).
Also prints the bytes the figure sends for a label toggle versus for a new image.
The browser-side numbers (tiny model) come from tests/e2e/test_heatmap_e2e.py
(test-artifacts/heatmap-e2e-timings.json).

    .venv/bin/python benchmarks/bench_heatmap_widget.py [--model ViT-B-16] [--toggles 6]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import open_clip
import torch

from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.engine.loading import wrap_model
from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer

BUDGET_MS = 300.0
LABELS = "cat, grass, sky, ground"


def payload_meter(figure) -> list[int]:
    """Approximate bytes of every update message the FigureWidget sends (JSON, arrays as lists)."""
    sizes: list[int] = []

    def measure(change) -> None:
        if change["new"]:
            sizes.append(len(json.dumps(change["new"], default=_to_jsonable)))
    figure.observe(measure, names=["_py2js_restyle", "_py2js_relayout", "_py2js_update"])
    return sizes


def _to_jsonable(value):
    return value.tolist() if isinstance(value, np.ndarray) else str(value)


def timed(action, widget) -> float:
    start = time.perf_counter()
    action()
    widget.wait()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--toggles", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    explainer = Explainer(wrap_model(model, name=args.model), cache_dir=False)
    print(f"{args.model}, random weights, CPU, {torch.get_num_threads()} threads, input 224 px")

    first_ms = None
    start = time.perf_counter()
    widget = HeatmapExplorer(explainer, sample_image("cat"), labels=LABELS)
    widget.wait()
    first_ms = (time.perf_counter() - start) * 1000
    widget.labels = LABELS + ", dog"  # encode "dog" once so that toggling it is a cache hit
    widget.wait()

    sizes = payload_meter(widget.current_figure)
    toggles = []
    for _ in range(args.toggles):
        for text in (LABELS, LABELS + ", dog"):
            toggles.append(timed(lambda: setattr(widget, "labels", text), widget))
    toggle_bytes = statistics.median(sizes)

    sizes.clear()
    new_image = [timed(lambda: setattr(widget, "image", sample_image(name)), widget)
                 for name in ("astronaut", "coffee", "rocket")]
    image_bytes = max(sizes)

    median_toggle = statistics.median(toggles)
    print(f"first explanation (4 labels + '' encoded, image): {first_ms:8.0f} ms")
    print(f"cached label toggle, median of {len(toggles)}:      {median_toggle:8.1f} ms  "
          f"(ratio to the {BUDGET_MS:.0f} ms budget: {median_toggle / BUDGET_MS:.2f})")
    print(f"new image, labels cached, median of 3:            {statistics.median(new_image):8.0f} ms")
    print(f"bytes sent per toggle (median message):           {toggle_bytes:8.0f}")
    print(f"bytes sent for a new image (largest message):     {image_bytes:8.0f}  "
          f"(ratio to a toggle: {image_bytes / toggle_bytes:.1f})")


if __name__ == "__main__":
    main()
