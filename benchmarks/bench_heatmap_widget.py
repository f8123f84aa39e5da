"""HeatmapExplorer responsiveness, server side (the kernel's share of each interaction).

Part "figure" (tiny random ViT, so that the figure, not the model, is what is timed): from setting a
trait until the widget has handed its updates to the (absent) browser,
  * a colour-map change, one opacity step and a view switch ("one label" <-> "raw vs surgery"),
    first on a fresh explorer, then again after the 59-label grid (PASCAL Context preset, "all
    labels", then four typed labels and "one label"); prints the trace count of the figure and the
    ratio after/before (1.0: the grid left nothing behind);
  * the first click on a map versus later clicks (ratio first/later).
Part "toggle" (ViT-B-16 with random weights, 224 px):
  * a cached label toggled off and on (image tokens and label features cached): target < 300 ms
    in the browser, so the server-side share is printed as a ratio to that budget;
  * a new image whose labels are already cached (one image forward pass);
  * the first explanation (labels encoded with the 85-prompt ensemble, then the image).
  Also prints the bytes the figure sends for a label toggle versus for a new image.
The browser-side numbers (tiny model) come from tests/e2e/test_heatmap_e2e.py
(test-artifacts/heatmap-e2e-timings.json).

    .venv/bin/python benchmarks/bench_heatmap_widget.py [--part figure|toggle|all] [--model ViT-B-16] [--toggles 6]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from clipsurgery_widgets.data.presets import PASCAL_CONTEXT_59
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.engine.loading import load_model
from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer

BUDGET_MS = 300.0
LABELS = "cat, grass, sky, ground"
TYPED = "cat, dog, tree, sky"  # the four labels typed after the 59-label grid


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


# --- part "figure" ---------------------------------------------------------------------------

def style_and_view_ms(widget: HeatmapExplorer, rounds: int) -> dict[str, float]:
    """Median ms of a colour-map change, one opacity step and a view switch (each way counted)."""
    cmap, opacity, view = [], [], []
    for _ in range(rounds):
        for name in ("viridis", "jet"):
            cmap.append(timed(lambda: setattr(widget, "cmap", name), widget))
        for value in (0.65, 0.6):
            opacity.append(timed(lambda: setattr(widget, "opacity", value), widget))
        for name in ("compare", "overlay"):
            view.append(timed(lambda: setattr(widget, "view", name), widget))
    return {"cmap": statistics.median(cmap), "opacity": statistics.median(opacity), "view": statistics.median(view)}


def figure_part(rounds: int) -> None:
    explainer = Explainer(load_model("tiny-random-vit", device="cpu"), cache_dir=False)
    cat = sample_image("cat")
    print(f"\n[figure] tiny-random-vit, CPU, {torch.get_num_threads()} threads; medians of {2 * rounds} changes")
    HeatmapExplorer(explainer, cat, labels=LABELS).wait()  # warm caches (prompts, plotly imports)

    widget = HeatmapExplorer(explainer, cat, labels=LABELS)
    widget.wait()
    # First click on a fresh explorer versus later clicks (the route a real click takes).
    first_click = timed(lambda: widget.plots.panels.click(0, 100.0, 80.0), widget)
    later = [timed(lambda i=i: widget.plots.panels.click(0, 60.0 + 10 * i, 120.0), widget) for i in range(8)]
    fresh_traces = len(widget.current_figure.data)
    before = style_and_view_ms(widget, rounds)

    grid_ms = timed(lambda: setattr(widget, "labels", list(PASCAL_CONTEXT_59)), widget)
    grid_ms += timed(lambda: setattr(widget, "view", "grid"), widget)
    grid_traces = len(widget.current_figure.data)
    widget.labels = TYPED
    widget.view = "overlay"
    widget.wait()
    after_traces = len(widget.current_figure.data)
    after = style_and_view_ms(widget, rounds)

    print(f"figure traces: fresh {fresh_traces}, 59-label grid {grid_traces}, "
          f"after the grid (4 labels, one label) {after_traces}")
    print(f"59 labels + grid view: {grid_ms:8.0f} ms")
    for key, what in (("cmap", "colour-map change"), ("opacity", "one opacity step"),
                      ("view", "view switch one label <-> raw vs surgery")):
        print(f"{what:<42} before the grid {before[key]:7.1f} ms, after {after[key]:7.1f} ms "
              f"(ratio after/before {after[key] / before[key]:.2f})")
    print(f"{'first click on a map':<42} {first_click:7.1f} ms, later clicks {statistics.median(later):7.1f} ms "
          f"(ratio first/later {first_click / statistics.median(later):.2f})")


# --- part "toggle" ---------------------------------------------------------------------------

def toggle_part(model_name: str, toggle_rounds: int) -> None:
    import open_clip

    from clipsurgery_widgets.engine.loading import wrap_model

    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None).eval()
    explainer = Explainer(wrap_model(model, name=model_name), cache_dir=False)
    print(f"\n[toggle] {model_name}, random weights, CPU, {torch.get_num_threads()} threads, input 224 px")

    start = time.perf_counter()
    widget = HeatmapExplorer(explainer, sample_image("cat"), labels=LABELS)
    widget.wait()
    first_ms = (time.perf_counter() - start) * 1000
    widget.labels = LABELS + ", dog"  # encode "dog" once so that toggling it is a cache hit
    widget.wait()

    sizes = payload_meter(widget.current_figure)
    toggles = []
    for _ in range(toggle_rounds):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("figure", "toggle", "all"), default="all")
    parser.add_argument("--model", default="ViT-B-16", help="model of the 'toggle' part")
    parser.add_argument("--toggles", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of style/view changes in the 'figure' part")
    args = parser.parse_args()
    if args.part in ("figure", "all"):
        figure_part(args.rounds)
    if args.part in ("toggle", "all"):
        toggle_part(args.model, args.toggles)


if __name__ == "__main__":
    main()
