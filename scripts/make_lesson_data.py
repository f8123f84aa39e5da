"""Write the small data files the lessons use (run once; the files are committed in notebooks/data/).

* coffee_cup_mask.png: a hand-drawn mask of the cup in scikit-image's "coffee" photo (600 x 400):
  body and handle, without saucer and spoon; white = object. Traced by eye on a 50-pixel grid,
  accurate to about 10 pixels, which is plenty for a 14 x 14 patch grid (43 x 29 pixels a cell).
* cat_on_grass.jpg and cat_on_grass_mask.png: scikit-image's cat photo ("chelsea", a close-up that
  fills its frame, so no map on it can show background) set into a grass texture (scikit-image's
  "grass", tinted green), so that a cat map has background to get wrong; the mask is where the
  cat was pasted. Both source images ship with scikit-image (no download).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "notebooks" / "data"

CUP_BODY = [(175, 60), (190, 30), (240, 15), (300, 12), (360, 18), (400, 35), (412, 70), (405, 130), (390, 190),
            (380, 215), (360, 245), (330, 262), (290, 268), (250, 262), (220, 245), (200, 215), (185, 170), (175, 110)]
CUP_HANDLE = [(195, 230), (205, 222), (250, 225), (258, 250), (252, 285), (235, 292), (208, 288), (196, 265)]

CANVAS = (576, 384)           # (width, height) of the collage
CAT_CROP = (0, 0, 370, 300)  # the cat's head in chelsea.png (x0, y0, x1, y1)
CAT_BOX = (300, 160, 540, 355)  # where it goes in the collage


def coffee_cup_mask() -> np.ndarray:
    """bool [400, 600]: the cup of skimage.data.coffee()."""
    height, width = skimage.data.coffee().shape[:2]
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in (CUP_BODY, CUP_HANDLE):
        draw.polygon(polygon, fill=255)
    return np.asarray(canvas) > 0


def cat_on_grass() -> tuple[Image.Image, np.ndarray]:
    """(RGB collage [384, 576], bool mask of the cat)."""
    grass = np.asarray(Image.fromarray(skimage.data.grass()).resize(CANVAS, Image.LANCZOS), dtype=np.float64)
    tinted = (grass[..., None] * np.array([0.55, 0.85, 0.45]) + np.array([10, 25, 5])).clip(0, 255)
    canvas = Image.fromarray(tinted.astype(np.uint8))
    x0, y0, x1, y1 = CAT_BOX
    cat = Image.fromarray(skimage.data.chelsea()).crop(CAT_CROP).resize((x1 - x0, y1 - y0), Image.LANCZOS)
    alpha = Image.new("L", cat.size, 0)
    ImageDraw.Draw(alpha).ellipse((6, 6, cat.size[0] - 6, cat.size[1] - 6), fill=255)
    alpha = alpha.filter(ImageFilter.GaussianBlur(5))  # soft edge, so the seam is no sharp circle
    canvas.paste(cat, (x0, y0), alpha)
    mask = np.zeros(CANVAS[::-1], dtype=bool)
    mask[y0:y1, x0:x1] = np.asarray(alpha) >= 128
    return canvas, mask


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cup = coffee_cup_mask()
    Image.fromarray((cup * 255).astype(np.uint8)).save(OUT / "coffee_cup_mask.png", optimize=True)
    collage, cat = cat_on_grass()
    collage.save(OUT / "cat_on_grass.jpg", quality=90)
    Image.fromarray((cat * 255).astype(np.uint8)).save(OUT / "cat_on_grass_mask.png", optimize=True)
    print(f"cup mask {cup.mean():.1%} of its image; cat mask {cat.mean():.1%} of the collage; written to {OUT}")


if __name__ == "__main__":
    main()
