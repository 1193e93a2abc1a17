"""Model store: find models by name or content hash, cache them, embed them in HDF5 files.

Lookup order for a hash (or a prefix of >= 8 hex digits):
  1. models shipped in the package (``models/zoo/*.nfm``),
  2. each folder of the environment variable NEURALFILTER_MODEL_PATH (os.pathsep separated),
  3. the user folder ($XDG_CACHE_HOME or ~/.cache, then ``neuralfilter/models``),
  4. models registered in memory with ``register_bytes`` (e.g. by ``load_embedded``).
Loaded models are cached by full hash, so repeated loads (one per chunk) cost a dict lookup.
"""
import json
import os
import re
import threading
from pathlib import Path

from ..errors import ModelNotFoundError, NeuralFilterError
from .model import Model

ZOO = Path(__file__).resolve().parent / "zoo"
EMBED_GROUP = "_neuralfilter/models"
MIN_PREFIX = 8
_HEX = re.compile(r"^[0-9a-f]+$")


def _read_defaults():
    try:
        return json.loads((ZOO / "defaults.json").read_text())
    except FileNotFoundError:
        return {}


DEFAULT_MODELS = _read_defaults()          # name -> full hash of the shipped default models
DEFAULT_NAME = "general"

_lock = threading.RLock()
_cache = {}                                # full hash -> Model
_registered = {}                           # full hash -> model file bytes


def user_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neuralfilter" / "models"


def search_dirs():
    """Folders searched, in order (the in-memory registry comes after them)."""
    dirs = [ZOO]
    dirs += [Path(p) for p in os.environ.get("NEURALFILTER_MODEL_PATH", "").split(os.pathsep) if p]
    dirs.append(user_dir())
    return dirs


def load(ref=None):
    """Model for ref: None (default 'general'), a shipped name, a Model, or a hash / hex prefix."""
    if isinstance(ref, Model):
        return ref
    if ref is None:
        ref = DEFAULT_NAME
    if not isinstance(ref, str):
        raise TypeError(f"model reference must be a name or a hex hash string, not {type(ref).__name__}")
    key = ref.strip().lower()
    if key in DEFAULT_MODELS:
        key = DEFAULT_MODELS[key]
    elif not _HEX.match(key) or len(key) < MIN_PREFIX:
        names = ", ".join(sorted(DEFAULT_MODELS)) or "none shipped"
        raise ModelNotFoundError(f"unknown model {ref!r}: use a shipped name ({names}) or a content "
                                 f"hash (at least {MIN_PREFIX} hex digits)")
    with _lock:
        hit = _from_cache(key)
        if hit is not None:
            return hit
        for d in search_dirs():
            model = _from_dir(d, key)
            if model is not None:
                return _cache.setdefault(model.hash, model)
        matches = [h for h in _registered if h.startswith(key)]
        if len(matches) > 1:
            raise NeuralFilterError(f"model prefix {key} is ambiguous: {', '.join(matches)}")
        if matches:
            return _cache.setdefault(matches[0], Model.from_bytes(_registered[matches[0]],
                                                                  "<registered>"))
    places = [str(d) for d in search_dirs()] + ["models registered in memory (register_bytes)"]
    raise ModelNotFoundError(f"model {key} not found; searched: " + "; ".join(places) +
                             ". Set NEURALFILTER_MODEL_PATH, copy the .nfm file to the user folder, "
                             "or call pyneuralfilter.models.load_embedded(h5file) first.")


def _from_cache(key):
    hits = [m for h, m in _cache.items() if h.startswith(key)]
    return hits[0] if len(hits) == 1 else None


def _from_dir(d, key):
    try:
        files = sorted(p for p in Path(d).glob(key[:16] + "*.nfm") if p.is_file())
    except OSError:
        return None
    models = []
    for p in files:
        m = Model.from_bytes(p.read_bytes(), str(p))
        if m.hash.startswith(key) and m.hash not in [x.hash for x in models]:
            models.append(m)
    if len(models) > 1:
        raise NeuralFilterError(f"model prefix {key} is ambiguous in {d}: "
                                + ", ".join(m.hash for m in models))
    return models[0] if models else None


def register_bytes(data):
    """Register a model file's bytes in memory (verifies its hash) -> full hash."""
    model = Model.from_bytes(bytes(data), "<registered>")
    with _lock:
        _registered[model.hash] = bytes(data)
        _cache.setdefault(model.hash, model)
    return model.hash


def save(model, folder=None):
    """Write model to folder (default: the user folder) as <hash[:16]>.nfm -> path."""
    folder = Path(folder) if folder is not None else user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.hash[:16]}.nfm"
    path.write_bytes(model.to_bytes())
    return path


def list_models():
    """Every model found, in lookup order: dicts with hash, name, source, sizes and card metrics."""
    names = {h: n for n, h in DEFAULT_MODELS.items()}
    seen, out = set(), []

    def add(model, source, size):
        if model.hash in seen:
            return
        seen.add(model.hash)
        out.append({"hash": model.hash, "name": names.get(model.hash, model.name), "source": source,
                    "bytes": size, "latent_dim": model.latent_dim, "latent_bits": model.latent_bits,
                    "architecture": model.card.get("architecture"),
                    "metrics": model.card.get("metrics", {})})
    for d in search_dirs():
        for p in sorted(Path(d).glob("*.nfm")) if Path(d).is_dir() else []:
            try:
                add(Model.from_bytes(p.read_bytes(), str(p)), str(p), p.stat().st_size)
            except NeuralFilterError as e:
                out.append({"hash": None, "source": str(p), "error": str(e)})
    with _lock:
        for h, data in _registered.items():
            add(_cache.get(h) or Model.from_bytes(data), "<registered>", len(data))
    return out


def clear_cache():
    """Forget cached and registered models (tests, long-running hosts)."""
    with _lock:
        _cache.clear()
        _registered.clear()


def embed(h5, model):
    """Store model's bytes as a uint8 dataset /_neuralfilter/models/<hash> in an h5py File/Group."""
    import numpy as np
    model = load(model)
    group = h5.require_group(EMBED_GROUP)
    if model.hash not in group:
        group.create_dataset(model.hash, data=np.frombuffer(model.to_bytes(), dtype=np.uint8))
    return model.hash


def load_embedded(h5):
    """Register every model embedded in an HDF5 file (h5py File/Group or a path) -> list of hashes.

    Call this before reading datasets compressed with an embedded model: the codec never calls h5py
    while decoding a chunk.
    """
    import h5py
    if isinstance(h5, (str, os.PathLike)):
        with h5py.File(h5, "r") as f:
            return load_embedded(f)
    if EMBED_GROUP not in h5:
        return []
    hashes = []
    for name, ds in h5[EMBED_GROUP].items():
        h = register_bytes(ds[()].tobytes())
        if h != name:
            raise NeuralFilterError(f"embedded model {name} has content hash {h}")
        hashes.append(h)
    return hashes
