"""Text side: prompt templates, label encoding with causal truncation, caption tokenisation.

See docs/algorithms.md, "Text features".
"""
from .captions import CaptionTokens, is_punctuation, token_features, tokenize_caption
from .encoding import DEFAULT_BATCH_SIZE, TEMPLATES, encode_texts, encode_tokens

__all__ = ["TEMPLATES", "encode_texts", "encode_tokens", "DEFAULT_BATCH_SIZE", "CaptionTokens", "tokenize_caption",
           "token_features", "is_punctuation"]
