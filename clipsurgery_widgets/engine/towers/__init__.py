"""Image towers: pixels -> tokens of the ordinary CLIP stream and of the CLIP Surgery path.

ViT (`vit`) and ModifiedResNet (`resnet`) passes share small tensor helpers (`ops`); `encode`
holds the public entry `encode_image_tokens`. See docs/algorithms.md, "Architecture surgery".
"""
from .encode import *  # noqa: F401,F403
from .encode import __all__  # noqa: F401
