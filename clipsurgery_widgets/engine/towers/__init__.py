"""Image towers: pixels -> tokens of the ordinary CLIP stream and of the CLIP Surgery path.

ViT (`vit`) and ModifiedResNet (`resnet`) passes share small tensor helpers (`ops`); `encode`
holds the public entry `encode_image_tokens`. See docs/algorithms.md, "Architecture surgery".
"""
from .dense import METHODS, DenseTokens, encode_dense, encode_dense_many  # noqa: F401,E402
from .dense_attention import MethodAttention, method_attention  # noqa: F401,E402
from .encode import *  # noqa: F401,F403
from .encode import __all__  # noqa: F401

__all__ = [*__all__, "METHODS", "DenseTokens", "encode_dense", "encode_dense_many", "MethodAttention",
           "method_attention"]
