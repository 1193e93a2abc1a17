"""HDF5 filter glue: filter ID, options class, registration with h5py, and the chunk callbacks
the C plugin (h5filter/H5Zneural.c, installed as ``plugins/libh5neuralfilter.so``) calls.

The cd_values layout (version 1) is documented in h5filter/H5Zneural.h and docs/filter.md::

    [version=1, mode (1 abs | 2 rel | 0 default), bound low word, bound high word,
     model hash digits 1-8, model hash digits 9-16]  + set_local: [itemsize, rank, dims...]

Policy lives here, not in C: parsing cd_values, building the chunk array, calling the codec.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import struct
import sys
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import codec, workspace
from .errors import CorruptChunkError, OutputMismatchError

#: Filter ID (private range >= 32768 until The HDF Group assigns one; see docs/filter.md).
NEURAL_FILTER = 50125
#: The folder to put in HDF5_PLUGIN_PATH (holds libh5neuralfilter.so).
PLUGIN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
PLUGIN_FILE = os.path.join(PLUGIN_PATH, "libh5neuralfilter.so")

CD_VERSION = 1
MODE_DEFAULT, MODE_ABS, MODE_REL = 0, 1, 2
MODE_NAMES = {MODE_ABS: "abs", MODE_REL: "rel"}
#: Bound used when the filter is given no cd_values (``compression=NEURAL_FILTER``).
DEFAULT_REL = 1e-3
N_USER = 6

# Inside a C host (h5dump, ParaView, a C program) the plugin started this interpreter and set
# sys._neuralfilter_c_host: h5py is then neither needed nor imported.
_C_HOST = bool(getattr(sys, "_neuralfilter_c_host", False))

_FilterBase = None
if not _C_HOST:
    try:
        import h5py as _h5py
        _FilterBase = _h5py.filters.FilterRefBase  # h5py >= 3.0 (module h5py._hl.filters)
    except (ImportError, AttributeError):  # no h5py: a Mapping with the same keys works with **
        _FilterBase = None
if _FilterBase is None:
    class _FilterBase(Mapping):  # type: ignore[no-redef]
        filter_id = None
        filter_options = ()

        def __getitem__(self, item):
            return {"compression": self.filter_id, "compression_opts": self.filter_options}[item]

        def __iter__(self):
            return iter(("compression", "compression_opts"))

        def __len__(self):
            return 2


# --------------------------------------------------------------------------------------------
# cd_values
# --------------------------------------------------------------------------------------------
def _split_double(x: float) -> tuple[int, int]:
    bits = struct.unpack("<Q", struct.pack("<d", float(x)))[0]
    return bits & 0xFFFFFFFF, bits >> 32


def _join_double(lo: int, hi: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", (int(hi) << 32) | int(lo)))[0]


_HEX = re.compile(r"^[0-9a-fA-F]+$")


def model_prefix(model) -> str | None:
    """16-hex-digit prefix of a model's content hash (None for the default model).

    ``model``: None, a ``pyneuralfilter.models.Model`` (anything with ``.hash``), a content hash
    or hash prefix of >= 8 hex digits, or a shipped model's name ("bssn", "general")."""
    if model is None:
        return None
    h = getattr(model, "hash", None)
    if h is None:
        if not isinstance(model, str):
            raise TypeError(f"model must be None, a hash string, a name or a Model, not "
                            f"{type(model).__name__}")
        if _HEX.match(model) and len(model) >= 16:
            h = model
        else:
            if _HEX.match(model) and len(model) < 8:
                raise ValueError(f"model hash prefix {model!r} is too short: give at least 8 hex "
                                 f"digits")
            from . import models  # resolve names and short prefixes to the full hash
            h = models.load(model).hash
    h = str(h).lower()
    if not _HEX.match(h) or len(h) < 16:
        raise ValueError(f"model hash {h!r} is not a hex string of at least 16 digits")
    return h[:16]


def _check_bound(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={value!r}: the error bound must be a positive finite number")
    return v


def pack_cd_values(*, abs=None, rel=None, model=None) -> tuple[int, ...]:
    """The 6 user cd_values for an absolute or relative bound (exactly one) and a model."""
    if abs is not None and rel is not None:
        raise TypeError("give exactly one error bound: abs=... or rel=..., not both")
    if abs is None and rel is None:
        raise TypeError("give exactly one error bound: abs=... (absolute) or rel=... (relative "
                        "to the value range of each chunk)")
    mode, bound = (MODE_ABS, _check_bound("abs", abs)) if abs is not None else \
        (MODE_REL, _check_bound("rel", rel))
    lo, hi = _split_double(bound)
    prefix = model_prefix(model)
    m_hi, m_lo = (int(prefix[:8], 16), int(prefix[8:16], 16)) if prefix else (0, 0)
    return (CD_VERSION, mode, lo, hi, m_hi, m_lo)


class CdValues(NamedTuple):
    version: int
    mode: str            # "abs" or "rel"
    bound: float
    model: str | None    # 16-hex-digit hash prefix, None = default model
    itemsize: int | None  # None before set_local ran
    shape: tuple | None

    @property
    def dtype(self):
        return None if self.itemsize is None else np.dtype(f"<f{self.itemsize}")

    @property
    def native(self):
        """The chunk dtype in this machine's byte order (None before set_local ran)."""
        return None if self.itemsize is None else self.dtype.newbyteorder("=")


def parse_cd_values(cd) -> CdValues:
    """Decode cd_values (the 6 user words, optionally followed by set_local's words)."""
    cd = tuple(int(c) for c in cd)
    if len(cd) == 0:
        return CdValues(CD_VERSION, "rel", DEFAULT_REL, None, None, None)
    if len(cd) < N_USER:
        raise ValueError(f"neuralfilter cd_values must have 0 or >= {N_USER} words, got {len(cd)}:"
                         f" {cd}")
    if cd[0] != CD_VERSION:
        raise ValueError(f"neuralfilter cd_values layout version {cd[0]} is not supported (this "
                         f"version reads {CD_VERSION}); upgrade pyneuralfilter")
    mode = cd[1]
    if mode == MODE_DEFAULT:
        name, bound = "rel", DEFAULT_REL
    elif mode in MODE_NAMES:
        name, bound = MODE_NAMES[mode], _join_double(cd[2], cd[3])
    else:
        raise ValueError(f"neuralfilter cd_values[1] = {mode} is not an error-bound mode "
                         f"(1 = abs, 2 = rel)")
    model = None if cd[4] == 0 and cd[5] == 0 else f"{cd[4]:08x}{cd[5]:08x}"
    if len(cd) == N_USER:
        return CdValues(cd[0], name, bound, model, None, None)
    if len(cd) < N_USER + 2:
        raise ValueError(f"neuralfilter cd_values are truncated: {cd}")
    itemsize, rank = cd[6], cd[7]
    if itemsize not in (4, 8):
        raise ValueError(f"neuralfilter cd_values: value size {itemsize} bytes is not float32 or "
                         f"float64")
    if not 1 <= rank <= 4 or len(cd) < 8 + rank:
        raise ValueError(f"neuralfilter cd_values: bad chunk rank {rank} in {cd}")
    return CdValues(cd[0], name, bound, model, itemsize, tuple(cd[8:8 + rank]))


# --------------------------------------------------------------------------------------------
# The two callbacks of the C plugin
# --------------------------------------------------------------------------------------------
def encode_chunk(data: bytes, cd_values) -> bytes:
    """Compress one raw chunk (C order, chunk shape and dtype from cd_values)."""
    import pyneuralfilter as nf
    p = parse_cd_values(cd_values)
    if p.shape is None:
        raise ValueError("neuralfilter cd_values lack the chunk shape (set_local did not run)")
    n = int(np.prod(p.shape)) * p.itemsize
    if len(data) != n:
        raise ValueError(f"chunk has {len(data)} bytes, expected {n} for shape {p.shape} of "
                         f"{p.dtype.name}")
    arr = np.frombuffer(data, dtype=p.dtype).reshape(p.shape)
    kw = {p.mode: p.bound}
    return bytes(nf.encode(arr, model=p.model, **kw))


def decode_chunk(data: bytes, cd_values, out=None) -> np.ndarray:
    """Decompress one chunk, checking that it holds the chunk shape and dtype of cd_values.
    `out`: the writable buffer the C plugin hands back to HDF5 (the decoded bytes go straight
    there); without it, a C-contiguous array that stays valid until the next call on this
    thread (a reused work array: see `workspace`)."""
    p = _parsed(tuple(cd_values))
    if p.shape is None:
        return codec.decode(data)
    if out is None:
        out = workspace.array("filter.chunk", p.shape, p.native)
    else:
        out = np.frombuffer(out, p.native).reshape(p.shape)
    try:
        return codec.decode(data, out=out)
    except OutputMismatchError as exc:          # not a chunk of this dataset
        raise CorruptChunkError(f"chunk does not fit the dataset's chunks of shape {p.shape} "
                                f"and {p.dtype.name} ({exc})") from None


@functools.lru_cache(maxsize=256)
def _parsed(cd):
    """`parse_cd_values` of a dataset's cd_values (a tuple), parsed once per dataset."""
    return parse_cd_values(cd)


# --------------------------------------------------------------------------------------------
# Options class (hdf5plugin convention)
# --------------------------------------------------------------------------------------------
class Neural(_FilterBase):
    """h5py compression options for neuralfilter, hdf5plugin style::

        f.create_dataset("x", data=a, chunks=(32, 32, 32), **Neural(rel=1e-3))
        f.create_dataset("y", data=a, chunks=True, compression=Neural(abs=1e-4, model="bssn"))

    Exactly one of ``abs`` (absolute bound on every value) or ``rel`` (bound relative to the
    value range, max - min, of each chunk). ``model``: None (default model), a content hash or
    hash prefix (>= 8 hex digits), a shipped model name or a ``Model``.
    ``compression=NEURAL_FILTER`` without options means ``rel=1e-3`` with the default model.
    """
    filter_name = "neuralfilter"
    filter_id = NEURAL_FILTER

    def __init__(self, *, abs=None, rel=None, model=None):
        self.filter_options = pack_cd_values(abs=abs, rel=rel, model=model)
        p = parse_cd_values(self.filter_options)
        self.mode, self.bound, self.model = p.mode, p.bound, p.model

    def __hash__(self):  # h5py looks compression values up in a set
        return hash((self.filter_id, tuple(self.filter_options)))

    def __repr__(self):
        m = f", model={self.model!r}" if self.model else ""
        return f"Neural({self.mode}={self.bound!r}{m})"


# --------------------------------------------------------------------------------------------
# Registration with h5py
# --------------------------------------------------------------------------------------------
_lib = None
_registered = False


def _load_plugin():
    global _lib
    if _lib is None:
        if not os.path.exists(PLUGIN_FILE):
            raise FileNotFoundError(
                f"the neuralfilter HDF5 plugin {PLUGIN_FILE} is missing: install the package with "
                f"`pip install .`, or build it in the source tree with `cmake -S . -B build && "
                f"cmake --build build`")
        lib = ctypes.CDLL(PLUGIN_FILE)
        lib.neuralfilter_h5py_class.restype = ctypes.c_void_p
        lib.neuralfilter_h5py_class.argtypes = [ctypes.c_char_p]
        lib.neuralfilter_last_error.restype = ctypes.c_char_p
        _lib = lib
    return _lib


def register(strict: bool = False) -> bool:
    """Register the filter with h5py's HDF5 (idempotent). Returns True when registered.

    Does nothing (returns False) inside a C host's embedded interpreter. When h5py or the plugin
    is unavailable it warns and returns False, or raises if ``strict``."""
    global _registered
    if _registered:
        return True
    if getattr(sys, "_neuralfilter_c_host", False):
        return False
    try:
        import h5py
        import h5py.h5z
        lib = _load_plugin()
        addr = lib.neuralfilter_h5py_class(os.fsencode(h5py.h5z.__file__))
        if not addr:
            raise OSError(f"cannot bind the neuralfilter plugin to h5py's HDF5: "
                          f"{lib.neuralfilter_last_error().decode(errors='replace')}")
        h5py.h5z.register_filter(addr)
        if not h5py.h5z.filter_avail(NEURAL_FILTER):
            raise OSError("h5py did not register the neuralfilter filter")
    except Exception as e:  # noqa: BLE001 - reported, not swallowed
        if strict:
            raise
        warnings.warn(f"neuralfilter: the HDF5 filter is not registered with h5py: {e}",
                      RuntimeWarning, stacklevel=2)
        return False
    _registered = True
    return True


def describe(cd_values) -> str:
    """One-line description of a dataset's cd_values, e.g. 'rel=0.001 model=default'."""
    p = parse_cd_values(cd_values)
    s = f"{p.mode}={p.bound:g} model={p.model or 'default'}"
    if p.shape is not None:
        s += f" chunk={p.shape} {p.dtype.name}"
    return s
