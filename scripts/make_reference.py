"""Write the lessons' reference figures and numbers, made with TRAINED weights, to notebooks/reference/.

Without the weights the notebooks run, but their maps and statistics mean nothing. Someone who has
the weights runs this once:

    CLIPSURGERY_MODEL=ViT-B-16:openai python scripts/make_reference.py

and each lesson then shows the stored figure beside its live one (``show_reference`` in
clipsurgery_widgets/figures/reference.py). Every reference is ``<name>.png`` plus ``<name>.json``
(model, weights, date, the numbers the lesson discusses).

Random weights (tiny-random-vit, NAME:none) are refused unless ``--allow-random`` is given (for
tests); such files are labelled ``"weights": "random"`` and must not be committed as references.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "notebooks" / "reference"
DATA = REPO / "notebooks" / "data"
DEFAULT_MODEL = "ViT-B-16:openai"
COFFEE_LABELS = ["coffee cup", "saucer", "spoon", "table"]
FIGURE2_TEXTS = ["cat", "grass", "sky", "table", ""]  # "" = the empty text
LABEL_SETS = {"cat": ["cat"], "cat, dog": ["cat", "dog"], "cat, kitten": ["cat", "kitten"]}
CAPTIONS = {"cat": "A close-up of a tabby cat's face.",
            "astronaut": "An astronaut in an orange suit in front of a flag.",
            "rocket": "A rocket on its launch pad at night."}


class Context:
    """The model, its explainer, the lesson data and (made on demand) a random-weights twin."""

    def __init__(self, model):
        from clipsurgery_widgets.engine import Explainer

        self.model = model
        self.explainer = Explainer(model, cache_dir=False)
        self._control = None

    @property
    def control(self):
        if self._control is None:
            self._control = random_twin(self.model)
        return self._control


def random_twin(model):
    """The same architecture with freshly initialised (random) weights: the control for trained weights."""
    from clipsurgery_widgets.engine import load_model

    if model.pretrained is None:
        return model  # already random
    return load_model(model.name, pretrained=None, device="cpu")


def is_random(model) -> bool:
    return model.pretrained is None


def load_spec(spec: str):
    """Load a model from a CLIPSURGERY_MODEL-style spec ("ViT-B-16:openai", "tiny-random-vit", ...)."""
    from clipsurgery_widgets.engine import load_model_from_env

    saved = os.environ.get("CLIPSURGERY_MODEL")
    os.environ["CLIPSURGERY_MODEL"] = spec
    try:
        return load_model_from_env()
    finally:
        if saved is None:
            os.environ.pop("CLIPSURGERY_MODEL", None)
        else:
            os.environ["CLIPSURGERY_MODEL"] = saved


def read_mask(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("L")) > 0


def cat_on_grass() -> np.ndarray:
    return np.asarray(Image.open(DATA / "cat_on_grass.jpg").convert("RGB"))


def contrast(heat: np.ndarray, mask: np.ndarray) -> float:
    from clipsurgery_widgets.engine.mask_stats import map_inside_outside

    inside, outside = map_inside_outside(heat, mask)
    return inside - outside


# --- one builder per reference: (figure, numbers) ------------------------------------------------

def raw_vs_surgery(ctx: Context) -> tuple[Figure, dict]:
    """01: raw CLIP versus CLIP Surgery on the coffee photo; map contrast inside/outside the cup mask."""
    from clipsurgery_widgets import figures
    from clipsurgery_widgets.engine import sample_image

    rgb = sample_image("coffee")
    result = ctx.explainer.explain(rgb, COFFEE_LABELS, method="both")
    cup = read_mask("coffee_cup_mask.png")
    numbers = {f"{m} map, cup inside - outside": contrast(result.map_for("coffee cup", m), cup)
               for m in ("raw", "surgery")}
    numbers["CLIP probabilities"] = [round(float(p), 3) for p in result.probs]
    return figures.explanation_grid(rgb, result, labels=["coffee cup", "table"]), numbers


def caption_tokens(ctx: Context) -> tuple[Figure, dict]:
    """02: token rankings with start/end tokens and punctuation included."""
    from clipsurgery_widgets.engine import sample_image
    from clipsurgery_widgets.engine.attribution import token_attributions
    from clipsurgery_widgets.figures.tokens import token_figure

    pairs, numbers, end_on_top = [], {}, 0
    for name, caption in CAPTIONS.items():
        rgb = sample_image(name)
        attribution = token_attributions(ctx.explainer, rgb, caption, include_special=True)
        ranked = [attribution.tokens.texts[t] for t in attribution.order]
        numbers[f"{name}: ranking"] = ranked
        end_on_top += int(attribution.tokens.is_special[attribution.order[0]] and attribution.order[0] > 0)
        pairs.append((rgb, attribution))
    numbers["captions with the end token on top"] = f"{end_on_top} of {len(CAPTIONS)}"
    return token_figure(pairs, ncols=3), numbers


def attention_stats(ctx: Context) -> tuple[Figure, dict]:
    """03: per-layer self mass and mask shares of q-k and v-v, for the model and a random-weights twin."""
    from clipsurgery_widgets.engine import sample_image
    from clipsurgery_widgets.engine.attention import capture_image_attention
    from clipsurgery_widgets.engine.mask_stats import grid_mask, mask_share_by_layer

    rgb = sample_image("coffee")
    cup = read_mask("coffee_cup_mask.png")
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    numbers = {}
    for model, tag, style in ((ctx.model, "model", "-"), (ctx.control, "random", ":")):
        capture = capture_image_attention(model, rgb, 224)
        cells = grid_mask(cup, capture.grid)
        stats = capture.stats("all")
        shares = mask_share_by_layer(capture, cells, exclude_radius=2)
        layers = np.arange(capture.num_layers)
        for kind, colour in (("qk", "tab:red"), ("vv", "tab:blue")):
            axes[0].plot(layers, stats.kind(kind)["self"], style, color=colour, label=f"{kind} ({tag})")
            contrast_by_layer = [s.contrast for s in shares[kind]]
            axes[1].plot(layers, contrast_by_layer, style, color=colour, label=f"{kind} ({tag})")
            numbers[f"{tag} {kind}: self mass, last layer"] = float(stats.kind(kind)["self"][-1])
            last = shares[kind][-1]
            numbers[f"{tag} {kind}: cup share inside/outside queries, last layer"] = [round(last.inside, 3),
                                                                                       round(last.outside, 3)]
        numbers[f"{tag}: chance share inside/outside"] = [round(last.chance_inside, 3), round(last.chance_outside, 3)]
    axes[0].set(title="mass on the query itself (mean over patches)", xlabel="block")
    axes[1].set(title="cup share: object queries - background queries", xlabel="block")
    axes[1].axhline(shares["vv"][0].chance_contrast, color="grey", lw=0.8)
    for ax in axes:
        ax.legend(fontsize="small")
    return fig, numbers


def sam_points(ctx: Context) -> tuple[Figure, dict]:
    """04: the automatic SAM points for a present object and an absent one."""
    from clipsurgery_widgets.engine import sample_image
    from clipsurgery_widgets.engine.maps import map_to_points, overlay, similarity_maps

    import torch

    rgb = sample_image("coffee")
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    numbers = {}
    for ax, text in zip(fig.subplots(1, 2), ("coffee cup", "dog")):
        tokens = ctx.explainer.image_tokens(rgb)
        scores = ctx.explainer.target_part_scores(rgb, text)[:, 0]
        points, labels = map_to_points(scores, tokens.grid, rgb.shape[:2])
        heat = similarity_maps(torch.from_numpy(scores)[None, :, None], tokens.grid, rgb.shape[:2])[0, 0].numpy()
        ax.imshow(overlay(rgb, heat))
        for label, colour in ((1, "orange"), (0, "deepskyblue")):
            chosen = points[labels == label]
            ax.scatter(chosen[:, 0], chosen[:, 1], c=colour, s=40, edgecolors="white")
        ax.set_title(f"{text!r}: {int(labels.sum())} positive points")
        ax.set_axis_off()
        numbers[f"{text}: positives"] = int(labels.sum())
        numbers[f"{text}: score range before min-max"] = [round(float(scores.min()), 4), round(float(scores.max()), 4)]
    return fig, numbers


def feature_surgery_maps(ctx: Context) -> tuple[Figure, dict]:
    """08: the Figure 2 experiment (raw maps of several texts and of the empty text) and the three panels."""
    from clipsurgery_widgets.engine.maps import overlay

    rgb, mask = cat_on_grass(), read_mask("cat_on_grass_mask.png")
    raw = ctx.explainer.explain(rgb, FIGURE2_TEXTS, method="raw")
    scores = raw.patch_scores  # [N, T] plain cosines
    features = ctx.explainer.label_features(FIGURE2_TEXTS).numpy()
    off = ~np.eye(len(FIGURE2_TEXTS), dtype=bool)
    numbers = {"mean correlation of the raw maps": float(np.corrcoef(scores.T)[off].mean()),
               "mean cosine of the text features": float((features @ features.T)[off].mean())}
    labels = FIGURE2_TEXTS[:-1]
    vv = ctx.explainer.explain(rgb, labels, feature_surgery=False)
    fs = ctx.explainer.explain(rgb, labels)
    fig = Figure(figsize=(13, 5.4), layout="constrained")
    axes = fig.subplots(2, 5)
    for ax, text, index in zip(axes[0], FIGURE2_TEXTS, range(len(FIGURE2_TEXTS))):
        ax.imshow(overlay(rgb, raw.maps[index]))
        ax.set_title(f"raw: {text!r}" if text else "raw: empty text")
    panels = [("raw", raw.map_for("cat", "raw")), ("v-v only", vv.map_for("cat")),
              ("v-v + feature surgery", fs.map_for("cat"))]
    for ax, (title, heat) in zip(axes[1], panels):
        ax.imshow(overlay(rgb, heat))
        ax.set_title(f"'cat': {title}")
        numbers[f"cat map inside - outside: {title}"] = contrast(heat, mask)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, numbers


def label_choice(ctx: Context) -> tuple[Figure, dict]:
    """08: the cat map under four label sets."""
    from clipsurgery_widgets.engine.maps import overlay
    from clipsurgery_widgets.engine.segmentation.classes import benchmark_classes

    rgb, mask = cat_on_grass(), read_mask("cat_on_grass_mask.png")
    sets = dict(LABEL_SETS, **{"PASCAL Context 59": [names[0] for names in benchmark_classes("context59")]})
    fig = Figure(figsize=(13, 3.2), layout="constrained")
    numbers = {}
    for ax, (title, labels) in zip(fig.subplots(1, len(sets)), sets.items()):
        heat = ctx.explainer.explain(rgb, labels).map_for("cat")
        ax.imshow(overlay(rgb, heat))
        ax.set_title(title)
        ax.set_axis_off()
        numbers[f"{title}: cat inside - outside"] = contrast(heat, mask)
    return fig, numbers


REFERENCES: dict[str, Callable[[Context], tuple[Figure, dict]]] = {
    "01_raw_vs_surgery": raw_vs_surgery,
    "02_caption_tokens": caption_tokens,
    "03_attention_stats": attention_stats,
    "04_sam_points": sam_points,
    "08_feature_surgery": feature_surgery_maps,
    "08_label_choice": label_choice,
}


def write_reference(name: str, ctx: Context, out: Path) -> tuple[Path, Path]:
    """Build one reference and write <out>/<name>.png and .json."""
    from clipsurgery_widgets.figures.output import save_figure

    fig, numbers = REFERENCES[name](ctx)
    png = save_figure(fig, out / f"{name}.png", dpi=100)
    record = {"name": name, "model": ctx.model.name, "pretrained": ctx.model.pretrained,
              "weights": "random" if is_random(ctx.model) else "trained",
              "made": datetime.date.today().isoformat(), "what": (REFERENCES[name].__doc__ or "").strip(),
              "numbers": numbers}
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return png, path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=f"model spec as in CLIPSURGERY_MODEL (default: that variable, "
                                                       f"else {DEFAULT_MODEL})")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the PNG and JSON files")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(REFERENCES)}")
    parser.add_argument("--allow-random", action="store_true",
                        help="write even with random weights (tests only; such files are no reference)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(REFERENCES) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        print(f"Unknown reference(s) {', '.join(unknown)}; choose from {', '.join(REFERENCES)}.", file=sys.stderr)
        return 2
    spec = args.model or os.environ.get("CLIPSURGERY_MODEL", "").strip() or DEFAULT_MODEL
    model = load_spec(spec)
    if is_random(model) and not args.allow_random:
        print(f"Refusing to write references with random weights ({spec}): they would show noise as if it were "
              f"the papers' result. Set CLIPSURGERY_MODEL to trained weights (e.g. {DEFAULT_MODEL} or "
              f"ViT-B-16:/path/to/ViT-B-16.pt), or pass --allow-random for a test run into another folder.",
              file=sys.stderr)
        return 2
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(model)
    for name in names:
        with contextlib.redirect_stdout(sys.stderr):  # library chatter stays off the list of files
            png, record = write_reference(name, ctx, out)
        print(png)
        print(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
