"""Label presets offered by the widgets: class-name lists of common segmentation datasets."""
from __future__ import annotations

# The 59 PASCAL Context classes as written in the CLIP Surgery authors' demo (natural-language
# spellings such as "potted plant" and "tv monitor", which suit CLIP prompts better than the
# dataset's "pottedplant" / "tvmonitor").
PASCAL_CONTEXT_59: tuple[str, ...] = (
    "airplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "potted plant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tv monitor", "wall", "water", "window", "wood",
)

# The 80 COCO object categories (detection / instance segmentation "things"), in category-id order.
COCO_80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# Name shown in the widgets' preset menu -> labels.
PRESETS: dict[str, tuple[str, ...]] = {
    "PASCAL Context (59)": PASCAL_CONTEXT_59,
    "COCO (80)": COCO_80,
}
