"""SWAE block models: deterministic integer decoder, model files, model store, training.

Importing this package does not import torch; only encoding and training need it.
"""
from .model import Model
from .store import (DEFAULT_MODELS, clear_cache, embed, list_models, load, load_embedded,
                    register_bytes, save, search_dirs)

__all__ = ["load", "register_bytes", "list_models", "Model", "DEFAULT_MODELS", "embed",
           "load_embedded", "save", "search_dirs", "clear_cache"]
