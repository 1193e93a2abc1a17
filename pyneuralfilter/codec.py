"""Compress one HDF5 chunk: bound -> prediction -> closed-loop quantization -> entropy coding.

Sections of a coded chunk (docs/format.md):
  CODES      entropy-coded quantization codes, pass by pass
  VERBATIM   values the quantizer could not code, in coding order, raw little-endian
  NONFINITE  positions and raw bytes of NaN/Inf values, restored exactly
"""
import numpy as np
import zstandard

from . import container as C
from . import entropy, interpolation
from .errors import CorruptChunkError, UnsupportedDataError
from .quantizer import dequantize, quantize

CODES, VERBATIM, NONFINITE, KINDS = 1, 2, 3, 4
N_CONTEXTS = 36
PREDICTORS = ("auto", "interp", "swae")
_EB_MAX = 2.0 ** 1000          # larger bounds are clamped (still a valid, looser-than-asked bound)


def encode(array, *, abs=None, rel=None, model=None, predictor="auto", context_model=True) -> bytes:
    """Compress a float32/float64 array of 1-4 dimensions so that every finite value decodes
    within the bound; NaN and Inf decode exactly.  Exactly one of `abs` and `rel` (relative to
    the value range of the chunk) must be given."""
    array = _check_array(array)
    bound_mode, bound = _check_bound(abs, rel)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, not {predictor!r}")
    finite = np.isfinite(array)
    eb = _absolute_bound(array, finite, bound_mode, bound)
    head = dict(dtype=array.dtype, shape=array.shape, bound_mode=bound_mode, bound=bound, eb=eb)
    raw = _pack_raw(array, head)
    if eb == 0 or array.size == 0:
        return raw
    coded = C.Chunk(C.MODE_CODED, sections=_encode_values(array, finite, eb, context_model), **head)
    coded = coded.pack()
    return coded if len(coded) < len(raw) else raw


def decode(data) -> np.ndarray:
    """Decompress a chunk made by `encode`."""
    chunk = C.unpack(data)
    if chunk.mode == C.MODE_RAW:
        return _from_bytes(chunk.sections.get(VERBATIM, b""), chunk)
    if chunk.mode == C.MODE_ZSTD:
        return _from_bytes(_unzstd(chunk.sections.get(VERBATIM, b""), chunk), chunk)
    return _decode_values(chunk)


def chunk_info(data) -> dict:
    """The header of a chunk as a dict (format version, dtype, shape, bound, model, sections)."""
    return C.unpack(data).info


# --- checks ---------------------------------------------------------------------------

def _check_array(array):
    array = np.asarray(array)
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        raise UnsupportedDataError(f"neuralfilter compresses float32 or float64 data, "
                                   f"not {array.dtype}")
    if not 1 <= array.ndim <= 4:
        raise UnsupportedDataError(f"neuralfilter compresses arrays of 1 to 4 dimensions, "
                                   f"not {array.ndim}")
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def _check_bound(abs, rel):
    if (abs is None) == (rel is None):
        raise TypeError("give exactly one error bound: abs=... or rel=...")
    mode, value = (C.BOUND_ABS, abs) if abs is not None else (C.BOUND_REL, rel)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the error bound must be a number, not {value!r}") from None
    if not value >= 0 or value == np.inf:
        raise ValueError(f"the error bound must be finite and >= 0, not {value}")
    return mode, value


def _absolute_bound(array, finite, mode, bound):
    if mode == C.BOUND_ABS:
        return min(bound, _EB_MAX)
    values = array[finite] if not finite.all() else array
    if values.size == 0:
        return 0.0
    with np.errstate(over="ignore"):
        span = float(values.max()) - float(values.min())
    return min(bound * span, _EB_MAX) if np.isfinite(span) else _EB_MAX


# --- raw fallback ----------------------------------------------------------------------

def _pack_raw(array, head):
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    packed = zstandard.ZstdCompressor(level=3).compress(raw)
    if len(packed) < len(raw):
        return C.Chunk(C.MODE_ZSTD, sections={VERBATIM: packed}, **head).pack()
    return C.Chunk(C.MODE_RAW, sections={VERBATIM: raw}, **head).pack()


def _unzstd(data, chunk):
    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(f"zstd section is damaged: {exc}") from None


def _from_bytes(data, chunk):
    dtype = chunk.dtype
    n = int(np.prod(chunk.shape, dtype=np.int64))
    if len(data) != n * dtype.itemsize:
        raise CorruptChunkError(f"value section holds {len(data)} bytes, expected "
                                f"{n * dtype.itemsize} for {chunk.shape} {dtype}")
    return np.frombuffer(data, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(chunk.shape)


# --- the coded path ----------------------------------------------------------------------

def _volumes(shape):
    """View any 1-4D shape as (variables, z, y, x)."""
    return (1,) * (4 - len(shape)) + tuple(shape)


def level_bound(eb, p):
    """Coarse levels are coded tighter (few points, and finer levels are predicted from them)."""
    return eb / min(1.25 ** (p.stride.bit_length() - 1), 3.0)


def _contexts(recon, qmag, p, eb, on):
    """Context of every target of pass p: level, neighbour codes, local gradient."""
    if not on:
        return np.zeros(recon[p.lines][p.targets].shape, np.int64)
    nb = interpolation.neighbours(recon, p)
    qn = interpolation.neighbours(qmag, p)
    with np.errstate(over="ignore", invalid="ignore"):
        grad = np.abs(nb[2][1] - nb[1][1]) / eb
    g = (grad >= 1).astype(np.int64) + (grad >= 4) + (grad >= 16)
    m = np.minimum(qn[1][1].astype(np.int64) + qn[2][1], 2)
    return p.level * 12 + m * 4 + g


def _encode_values(array, finite, eb, context_model):
    dtype = array.dtype
    values = array.astype(np.float64).reshape(_volumes(array.shape))
    free = ~finite.reshape(values.shape)
    values[free] = 0.0
    coder = entropy.Encoder(N_CONTEXTS)
    verbatim = []
    kinds = []
    for v in range(values.shape[0]):
        x, fr = values[v], free[v]
        recon = np.zeros_like(x)
        qmag = np.zeros(x.shape, np.int8)
        # the first point has no neighbours: predicted as 0
        q, esc, r = quantize(x[:1, :1, :1], np.zeros((1, 1, 1)), eb, dtype, fr[:1, :1, :1])
        coder.add(np.zeros((1, 1, 1), np.int64), q, esc)
        recon[0, 0, 0], qmag[0, 0, 0] = r[0, 0, 0], 2
        verbatim.append(x[:1, :1, :1][esc])
        for p in interpolation.passes(x.shape):
            ctx = _contexts(recon, qmag, p, eb, context_model)
            xt, ft = x[p.lines][p.targets], fr[p.lines][p.targets]
            best = None
            for cubic in (True, False):
                pred = interpolation.predict(recon, p, cubic)
                q, esc, r = quantize(xt, pred, level_bound(eb, p), dtype, ft)
                cost = np.log2(1 + np.abs(q)).sum() + 32 * esc.sum()
                if best is None or cost < best[0]:
                    best = (cost, cubic, q, esc, r)
            _, cubic, q, esc, r = best
            kinds.append(cubic)
            coder.add(ctx, q, esc)
            recon[p.lines][p.targets] = r
            qmag[p.lines][p.targets] = np.where(esc, 2, np.minimum(np.abs(q), 2))
            verbatim.append(x[p.lines][p.targets][esc])
    sections = {CODES: coder.finish(), KINDS: np.packbits(kinds).tobytes()}
    verbatim = np.concatenate(verbatim).astype(dtype.newbyteorder("<"))
    if verbatim.size:
        sections[VERBATIM] = verbatim.tobytes()
    if free.any():
        sections[NONFINITE] = _pack_nonfinite(array, ~finite)
    return sections


def _decode_values(chunk):
    dtype = chunk.dtype
    shape4 = _volumes(chunk.shape)
    eb = chunk.eb
    out = np.zeros(shape4, np.float64)
    verbatim = np.frombuffer(chunk.sections.get(VERBATIM, b""), dtype.newbyteorder("<"))
    if len(chunk.sections.get(VERBATIM, b"")) % dtype.itemsize:
        raise CorruptChunkError("verbatim section does not hold whole values")
    verbatim = verbatim.astype(np.float64)
    if CODES not in chunk.sections:
        raise CorruptChunkError("coded chunk has no code section")
    coder = entropy.Decoder(chunk.sections[CODES], N_CONTEXTS)
    kinds = iter(np.unpackbits(np.frombuffer(chunk.sections.get(KINDS, b""), np.uint8)))
    used = 0
    context_model = True  # contexts are recomputed; a single-context chunk just has one table

    def restore(pred, q, esc, eb):
        nonlocal used
        r = dequantize(pred, q, eb, dtype)
        k = int(np.count_nonzero(esc))
        if used + k > verbatim.size:
            raise CorruptChunkError("verbatim section is shorter than the codes say")
        r[esc] = verbatim[used:used + k]
        used += k
        return r

    for v in range(shape4[0]):
        recon = out[v]
        qmag = np.zeros(recon.shape, np.int8)
        q, esc = coder.take(np.zeros((1, 1, 1), np.int64))
        recon[:1, :1, :1] = restore(np.zeros((1, 1, 1)), q, esc, eb)
        qmag[0, 0, 0] = 2
        for p in interpolation.passes(recon.shape):
            ctx = _contexts(recon, qmag, p, eb, context_model)
            pred = interpolation.predict(recon, p, bool(next(kinds)))
            q, esc = coder.take(ctx)
            recon[p.lines][p.targets] = restore(pred, q, esc, level_bound(eb, p))
            qmag[p.lines][p.targets] = np.where(esc, 2, np.minimum(np.abs(q), 2))
    if used != verbatim.size:
        raise CorruptChunkError("verbatim section is longer than the codes say")
    result = out.astype(dtype).reshape(chunk.shape)
    if NONFINITE in chunk.sections:
        _unpack_nonfinite(chunk.sections[NONFINITE], result)
    return result


def _pack_nonfinite(array, mask):
    idx = np.flatnonzero(mask).astype("<u8")
    vals = array.ravel()[idx].astype(array.dtype.newbyteorder("<"))
    body = np.uint64(idx.size).astype("<u8").tobytes() + np.diff(idx, prepend=0).astype("<u8").tobytes()
    return zstandard.ZstdCompressor(level=3).compress(body + vals.tobytes())


def _unpack_nonfinite(data, result):
    try:
        body = zstandard.ZstdDecompressor().decompress(data)
        n = int(np.frombuffer(body[:8], "<u8")[0])
        idx = np.cumsum(np.frombuffer(body[8:8 + 8 * n], "<u8"))
        vals = np.frombuffer(body[8 + 8 * n:], result.dtype.newbyteorder("<"))
    except (zstandard.ZstdError, IndexError, ValueError) as exc:
        raise CorruptChunkError(f"non-finite section is damaged: {exc}") from None
    if vals.size != n or (n and idx[-1] >= result.size):
        raise CorruptChunkError("non-finite section does not match the chunk shape")
    result.reshape(-1)[idx] = vals
