"""Compress one HDF5 chunk: bound -> prediction -> closed-loop quantization -> entropy coding.

Sections of a coded chunk (docs/format.md):
  CODES      entropy-coded quantization codes, pass by pass
  VERBATIM   values the quantizer could not code, in coding order, raw little-endian
  NONFINITE  positions and raw bytes of NaN/Inf values, restored exactly
  KINDS      one bit per interpolation pass: cubic or linear
  BLOCKMAP   one bit per full 5x5x5 block: predicted by the SWAE (its codes come first)
  LATENTS    the SWAE blocks' latents and float32 normalisation (centre, half-range)
  LORENZO    instead of CODES/KINDS: the codes of the Lorenzo predictor (rough fields)
  DIGEST     CRC-32 of the decoded values, as the encoder decoded and verified them
  TAPS       one int8 per interpolation pass: interior weights (-a, 1/2+a, 1/2+a, -a), a = tap/256
             (absent: every pass 16, the cubic); fitted by least squares per pass
  FEEDBACK   one int8 per interpolation pass: gain g = value/128 of the coded residuals of the
             neighbours at t-s and t+s added to the prediction (absent: 0); least squares
"""
import functools
import struct
import warnings

import numba
import numpy as np
import zstandard

from . import container as C
from . import entropy, interpolation, lorenzo, swae, workspace
from .interpolation import CUBIC_TAP
from .errors import CorruptChunkError, NeuralFilterError, OutputMismatchError, UnsupportedDataError
from .quantizer import QMAX, dequantize, quantize
from .threads import one_thread

CODES, VERBATIM, NONFINITE, KINDS, BLOCKMAP, LATENTS, LORENZO, DIGEST, TAPS, FEEDBACK = range(1, 11)
FEEDBACK_UNIT = 128            # residual feedback gains are stored as int8: gain = value / 128
FEEDBACK_MIN_TARGETS = 256     # smaller (coarse) passes: no feedback (measured: fitted on few
                               # points it often costs bytes downstream, up to 10 %)
FEEDBACK_MIN_SAVING = 1 / 32   # estimated bits per target feedback must save in the finest level
                               # (7/8 of the targets, where it slows the decoder most; estimated
                               # gains of 0.0-0.2 % were common there, and in turbulence cost
                               # bytes).  Coarser levels need none: their few targets cost little
                               # to decode and predict all finer ones.  Measured with the decoder
                               # change, whole 128^3 at 1e-2: kolmo_u 1.12x faster for 0.2 % more
                               # bytes, log-normal 1.09-1.28x for 0.7 % more
SWAE_CONTEXT = 36              # residuals of SWAE-predicted blocks
FLAG_CONTEXT = 37              # + 3 level + busiest neighbour bucket: "run not all zero"
N_CONTEXTS = 46
GROUP = 64
# Context sets an encoder may pick (index stored in the chunk): all contexts; one per level
# (+ SWAE, + flags per level); a single one; (format 4) one per level and gradient bucket (+
# SWAE, + flags per level).  Small chunks often pay less for fewer tables; all but the first
# ignore code magnitudes, which the decoder then does not track (measured 1.2-1.4x faster).
# uint8, as the entropy coder takes them (no conversion per chunk).
# (Format 5) the gradient set with the flags' (or zero gaps') contexts kept apart by their
# third term: the busiest neighbour term of a run, or the gradient bucket where a gap starts.
CONTEXT_SETS = tuple(np.asarray(m, np.uint8) for m in (
    np.arange(N_CONTEXTS), np.r_[np.arange(36) // 12, 3, 4 + np.arange(9) // 3],
    np.zeros(N_CONTEXTS, int), np.r_[np.arange(36) // 12 * 4 + np.arange(36) % 4, 12,
                                     13 + np.arange(9) // 3],
    np.r_[np.arange(36) // 12 * 4 + np.arange(36) % 4, 12, 13 + np.arange(9)]))
ONE_TABLE = 2                  # the single-context set: what context_model=False codes with
GAP_SETS = (1, 2, 3, 4)        # the sets zero gaps may use: free of code magnitudes
# Zero gaps (format v5) trade bytes for decoding speed.  A chunk's decoding time is modelled
# (benchmarks/fit_decode_model.py: least squares on the relative error over the 45 chunks of
# six fields, 32^3 and 64^3, where the choice is open; Intel Xeon; 4 % rms error for gaps, 10 %
# for run flags) as 12.8 us + 2.3 ns per target + 5.0 ns per symbol in run flags, and 1.2 ns
# per target + 9.6 ns per symbol + 23 ns per row of targets in gaps (no call term: it fits to
# 0).  The fit before it (AMD EPYC, before the decoders lost numba's reference counting and the
# gap decoder its branch per gap: 13 us + 4.0 + 5.8 ns; 13 us + 1.8 + 12.7 + 43 ns) overrated
# gaps' rows and run flags' targets, and so kept 15 of 64 log-normal 32^3 chunks at 1e-2 in run
# flags that decode 1.0-1.4x faster in gaps, for 3-7 % more bytes each.  (A model of symbols
# alone missed the rows, and so the speed of large chunks.)
DECODE_NS = (12.8e3, 2.3, 5.0)          # per call, per target, per symbol in run flags
GAP_DECODE_NS = (0.0, 1.2, 9.6, 23.0)   # per call, per target, per symbol, per row in gaps
GAP_BYTES_FACTOR = 3           # gaps are kept where the modelled time saved is 3x the bytes added
GAP_MIN_DENSITY = 0.75         # and, where they add bytes, only if run flags leave this many
                               # symbols per target to decode (measured 7.5-20 ns per target
                               # there, 3.3-11 below it: those decode fast already; BSSN chi at
                               # 1e-4 in 64^3 chunks, 0.30-0.56, would be 1.3-1.7x faster in gaps
                               # for 6-18 % more bytes, more than its ratio margin over SZ3)
PREDICTORS = ("auto", "interp", "swae")
LORENZO_TRIAL = 1.25           # Lorenzo is entropy coded only when its estimated cost is below
                               # this x interpolation's (measured: it wins only below ~1.05x)
LORENZO_SPARSE = 1 / 8         # bytes per value (1 bit): below this, interpolation decodes faster
LORENZO_MARGIN = 1 / 256       # than Lorenzo's serial loop, which there must save this many
                               # bytes per value (measured: nearly empty 32^3 chunks 1.7x faster)
SWAE_MIN_SAVING = 1 / 100      # "auto" encodes a chunk with SWAE blocks only where they are
                               # estimated to save this much of the volume's estimated cost
                               # (measured: estimated savings of 0.2-0.6 % came to 0.00-0.01 %
                               # in bytes, for twice the encoding time)
_EB_MAX = 2.0 ** 1000          # larger bounds are clamped (still a valid, looser-than-asked bound)


@one_thread
def encode(array, *, abs=None, rel=None, model=None, predictor="auto", context_model=True) -> bytes:
    """Compress a float32/float64 array of 1-4 dimensions so that every finite value decodes
    within the bound; NaN and Inf decode exactly.  Exactly one of `abs` and `rel` (relative to
    the value range of the chunk) must be given.

    predictor: "auto" (classical prediction, with SWAE blocks where they make the chunk
    smaller), "interp" (classical only: interpolation or, where it codes smaller, Lorenzo) or
    "swae" (every full finite 5x5x5 block by the SWAE).  context_model=False codes with one
    probability table (the ablation)."""
    array = _check_array(array)
    bound_mode, bound = _check_bound(abs, rel)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, not {predictor!r}")
    finite = np.isfinite(array)
    eb = _absolute_bound(array, finite, bound_mode, bound)
    head = dict(dtype=array.dtype, shape=array.shape, bound_mode=bound_mode, bound=bound, eb=eb)
    if eb == 0 or array.size == 0:
        return _pack_raw(array, head)
    candidates = []
    values = array.astype(np.float64).reshape(_volumes(array.shape))
    free = ~finite.reshape(values.shape)
    values[free] = 0.0
    net = _model_or_none(model, predictor)
    costs = [] if net and predictor == "auto" else None

    def classical():
        """Interpolation, or Lorenzo where it codes smaller (rough fields): see `_rougher`."""
        sections, cost = _encode_values(array, values, free, eb, context_model, costs=costs)
        smooth = C.Chunk(C.MODE_CODED, sections=sections, **head).pack()
        rough = _encode_lorenzo(array, values, free, eb, context_model, LORENZO_TRIAL * cost)
        if rough is None:
            return [smooth]
        rough = C.Chunk(C.MODE_CODED, sections=rough, **head).pack()
        return [rough if _rougher(len(rough), len(smooth), array.size) else smooth]

    if predictor != "swae":
        candidates += classical()
    if net:           # SWAE blocks first; "auto" keeps them only if the chunk gets smaller
        picks = [_choose_blocks(net, values[v], free[v], eb, array.dtype,
                                None if costs is None else costs[v]) for v in range(len(values))]
        if any(picks):
            sections, _ = _encode_values(array, values, free, eb, context_model, net, picks)
            candidates.append(C.Chunk(C.MODE_CODED, sections=sections,
                                      model_hash=swae.hash_bytes(net), **head).pack())
    if not candidates:              # "swae", but no full finite 5x5x5 block
        candidates += classical()
    best = min(candidates, key=len)
    raw = _pack_raw(array, head, squeeze=len(best) > array.nbytes // 2)
    return _sealed(best, array, eb, raw) if len(best) + 4 + 5 < len(raw) else raw


def _rougher(lorenzo, interpolated, values):
    """Whether a chunk of `values` values is coded by Lorenzo, given both sizes in bytes: where
    interpolation codes it in under LORENZO_SPARSE bytes per value, Lorenzo must save
    LORENZO_MARGIN bytes per value to pay for its slower decoder; elsewhere the smaller wins."""
    margin = LORENZO_MARGIN * values if interpolated < LORENZO_SPARSE * values else 0
    return lorenzo + margin < interpolated


def _sealed(data, array, eb, raw):
    """Decode the chunk as any reader will, check every value against the bound, and record a
    CRC-32 of the decoded values (DIGEST) so that a reader that computes differently (another
    library version, a platform quirk) fails loudly instead of returning other values.  Should
    the check ever fail, the values are stored losslessly instead."""
    finite = np.isfinite(array)
    try:
        decoded = decode(data)
        with np.errstate(invalid="ignore"):
            ok = (np.array_equal(np.isnan(array), np.isnan(decoded))
                  and np.array_equal(array[np.isinf(array)], decoded[np.isinf(array)])
                  and not (np.abs(decoded[finite].astype(np.float64) - array[finite]) > eb).any())
    except NeuralFilterError:       # a chunk its own reader refuses fails the check as well
        ok = False
    if not ok:
        warnings.warn("neuralfilter: a coded chunk failed its own bound check and was stored "
                      "losslessly instead; please report this", RuntimeWarning, stacklevel=3)
        return raw
    chunk = C.unpack(data)
    chunk.sections[DIGEST] = _digest(decoded)
    return chunk.pack()


def _digest(decoded):
    little = decoded.astype(decoded.dtype.newbyteorder("<"), copy=False)
    return struct.pack("<I", C.crc32(np.ascontiguousarray(little).view(np.uint8)))


def decode(data, out=None) -> np.ndarray:
    """Decompress a chunk made by `encode`; into `out` (returned) if given: a C-contiguous
    array of the chunk's shape and float dtype in native byte order (its contents are
    undefined after an error)."""
    chunk = C.unpack(data)
    out = _output(chunk, out)
    if chunk.mode == C.MODE_RAW:
        return _from_bytes(chunk.sections.get(VERBATIM, b""), chunk, out)
    if chunk.mode == C.MODE_ZSTD:
        return _from_bytes(_unzstd(chunk.sections.get(VERBATIM, b""), chunk), chunk, out)
    if not 0 < chunk.eb <= _EB_MAX:           # the encoder codes only with such bounds
        raise CorruptChunkError(f"coded chunk with an impossible error bound {chunk.eb!r}")
    _decode_values(chunk, out)
    if DIGEST in chunk.sections and chunk.sections[DIGEST] != _digest(out):
        raise CorruptChunkError("decoded values differ from those the encoder verified (digest "
                                "mismatch): this reader computes differently from the writer's "
                                "(library versions or platform); nothing was returned")
    return out


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
    if bound == 0:
        return 0.0
    return min(bound * span, _EB_MAX) if np.isfinite(span) else _EB_MAX


# --- raw fallback ----------------------------------------------------------------------

def _pack_raw(array, head, squeeze=True):
    """The values losslessly: zstd-compressed if asked and smaller, else raw."""
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    packed = zstandard.ZstdCompressor(level=3).compress(raw) if squeeze else raw
    if len(packed) < len(raw):
        return C.Chunk(C.MODE_ZSTD, sections={VERBATIM: packed}, **head).pack()
    return C.Chunk(C.MODE_RAW, sections={VERBATIM: raw}, **head).pack()


def _unzstd(data, chunk):
    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(f"zstd section is damaged: {exc}") from None


def _output(chunk, out):
    """The array a chunk decodes into: `out`, checked, or a new one."""
    native = chunk.dtype.newbyteorder("=")
    if out is None:
        return np.empty(chunk.shape, native)
    if (out.shape != chunk.shape or out.dtype != native or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise OutputMismatchError(f"cannot decode into an array of shape {out.shape} and dtype "
                                  f"{out.dtype}: the chunk holds {chunk.shape} {native.name} "
                                  f"values (a writeable C-contiguous native array is needed)")
    return out


def _from_bytes(data, chunk, out):
    n = out.size
    if len(data) != n * chunk.dtype.itemsize:
        raise CorruptChunkError(f"value section holds {len(data)} bytes, expected "
                                f"{n * chunk.dtype.itemsize} for {chunk.shape} {chunk.dtype}")
    out.reshape(-1)[:] = np.frombuffer(data, chunk.dtype)
    return out


# --- the coded path ----------------------------------------------------------------------

def _volumes(shape):
    """View any 1-4D shape as (variables, z, y, x)."""
    return (1,) * (4 - len(shape)) + tuple(shape)


def level_bound(eb, p):
    """Coarse levels are coded tighter (few points, and finer levels are predicted from them)."""
    return eb / _level_divisor(p)


def _level_divisor(p):
    return min(1.25 ** (p.stride.bit_length() - 1), 3.0)


def _magnitude(q, esc):
    """Code magnitude as the contexts see it: 0, 1, or 2 for larger and escaped codes."""
    return np.where(esc, 2, np.minimum(np.abs(q), 2)).astype(np.int8)


_COST = 2 * np.log2(1 + np.arange(QMAX + 1)) + (np.arange(QMAX + 1) != 0)


def _cost(q, esc):
    """Estimated coded bits of codes (|q| <= QMAX), to compare predictors (not a size promise):
    2 log2(1 + |q|) + 1 for a non-zero code, 40 for an escape."""
    out = np.empty(q.shape)
    _cost_kernel(q.reshape(-1), esc.reshape(-1), _COST, out.reshape(-1))
    return out


@numba.njit(cache=True)
def _cost_kernel(q, esc, table, out):
    for i in range(q.size):
        out[i] = table[min(abs(q[i]), table.size - 1)] + 40.0 * esc[i]


class _Streams:
    """What the encoder writes and the decoder reads back, in the same order."""

    def __init__(self, context_model, gaps=True):
        choices = None if context_model else [ONE_TABLE]
        self.coder = entropy.Encoder(CONTEXT_SETS, choices)
        self.gap_coder = (entropy.Encoder(CONTEXT_SETS, GAP_SETS if context_model else [ONE_TABLE],
                                          gaps=True) if gaps else None)
        self.verbatim, self.kinds, self.taps, self.gains = [], [], [], []
        self.cost = 0.0                     # estimated bits (`_cost`) of the codes so far
        self.rows = 0                       # rows of targets in the passes so far

    def add(self, contexts, q, escaped):
        """Codes outside the passes (point 0, SWAE residuals): the same in either stream."""
        for coder in (self.coder, self.gap_coder):
            if coder is not None:
                coder.add(contexts, q, escaped)

    def codes(self, targets):
        """The CODES section of a chunk of `targets` values: run flags, or zero gaps where they
        pay (GAP_BYTES_FACTOR, GAP_MIN_DENSITY)."""
        runs = self.coder.finish()
        if self.gap_coder is None:
            return runs
        gaps = self.gap_coder.finish()
        added = len(gaps) / len(runs) - 1
        if added > 0 and self.coder.symbols < GAP_MIN_DENSITY * targets:
            return runs
        call, target, symbol = DECODE_NS
        time_runs = call + target * targets + symbol * self.coder.symbols
        call, target, symbol, row = GAP_DECODE_NS
        time_gaps = call + target * targets + symbol * self.gap_coder.symbols + row * self.rows
        return gaps if time_runs / time_gaps - 1 > GAP_BYTES_FACTOR * added else runs


def _interpolate(x, fr, eb, dtype, st, recon, qmag, resid, known, cost=None):
    """Code the volume x by multilevel interpolation; points marked known (None: no point) are
    already coded."""
    if known is None or not known[0, 0, 0]:
        q, esc, r = quantize(x[:1, 0, 0], np.zeros(1), eb, dtype, fr[:1, 0, 0])
        st.add(np.zeros(1, np.int64), q, esc)
        recon[0, 0, 0], qmag[0, 0, 0] = r[0], _magnitude(q, esc)[0]
        st.verbatim.append(x[:1, 0, 0][esc])
    for p in interpolation.passes(x.shape):
        geometry = interpolation.geometry(x.shape, p, known)
        ctx, flag_ctx = _pass_contexts(recon, qmag, geometry, p, eb)
        xt, ft = _gather(x, geometry), _gather(fr, geometry)

        def predict(cubic, tap=CUBIC_TAP, gain=0):
            pred = np.empty(xt.size)
            w = interpolation.weights(x.shape[p.axis], p.stride, cubic, tap)
            interpolation.pass_predict(recon.reshape(-1), resid.reshape(-1), *geometry, w,
                                       gain / FEEDBACK_UNIT if gain else None, pred)
            return pred

        c, cubic, tap, gain, q, esc, r = _best_prediction(
            xt, ft, predict, level_bound(eb, p), dtype, FEEDBACK_MIN_SAVING if p.level == 0 else 0)
        st.kinds.append(cubic)
        st.taps.append(tap)
        st.gains.append(gain)
        st.cost += float(c.sum())
        _add_in_runs(st.coder, ctx, flag_ctx, q, esc)
        if st.gap_coder is not None:
            st.gap_coder.add(*_gap_stream(ctx, q, esc, FLAG_CONTEXT + 3 * p.level,
                                          interpolation.GAP_MAX))
            st.rows += int(geometry[2][0] * geometry[2][1])     # the pass's rows
        interpolation.pass_scatter(recon.reshape(-1), *geometry, r)
        interpolation.pass_scatter(qmag.reshape(-1), *geometry, _magnitude(q, esc))
        interpolation.pass_scatter(resid.reshape(-1), *geometry, q * (2.0 * level_bound(eb, p)))
        st.verbatim.append(xt[esc])
        if cost is not None:
            interpolation.pass_scatter(cost.reshape(-1), *geometry, c)


def _best_prediction(x, free, predict, eb, dtype, feedback_saving=0.0):
    """The pass's prediction with the smallest estimated cost: cubic, linear, or the 4-tap
    filter fitted by least squares; then, in passes of FEEDBACK_MIN_TARGETS or more, with the
    neighbours' coded residuals fed back (gain fitted likewise) if that saves feedback_saving
    bits per target.  Returns (cost, cubic, tap, gain, q, escaped, recon)."""
    best = None

    def trial(cubic, tap=CUBIC_TAP, gain=0, pred=None):
        nonlocal best
        pred = predict(cubic, tap, gain) if pred is None else pred
        q, esc, r = quantize(x, pred, eb, dtype, free)
        c = _cost(q, esc)
        margin = feedback_saving * x.size if gain else 0.0
        if best is None or c.sum() + margin < best[0].sum():
            best = (c, cubic, tap, gain, q, esc, r, pred)

    cubic_pred, fit = predict(True), ~free
    trial(True, pred=cubic_pred)
    trial(False)
    tap = _fitted(x[fit], predict(True, 0)[fit], cubic_pred[fit], CUBIC_TAP, CUBIC_TAP)
    if tap != CUBIC_TAP:
        trial(True, tap)
    cubic, tap, pred = best[1], best[2], best[-1]
    if x.size < FEEDBACK_MIN_TARGETS:
        return best[:-1]
    gain = _fitted(x[fit], pred[fit], predict(cubic, tap, FEEDBACK_UNIT)[fit], FEEDBACK_UNIT, 0)
    if gain:
        trial(cubic, tap, gain)
    return best[:-1]


_SPARSE = -128                 # first byte of the sparse form of TAPS / FEEDBACK (never a value)


def _pack_pass_values(values, default):
    """One int8 per pass (dense), or, when shorter, the marker -128, a bit per pass (numpy
    packbits order) set where the value differs from the default, and those values."""
    values = np.array(values, np.int8)
    changed = values != default
    sparse = np.int8(_SPARSE).tobytes() + np.packbits(changed).tobytes() + values[changed].tobytes()
    return min(values.tobytes(), sparse, key=len)


def _unpack_pass_values(data, n_passes, default, name):
    """One int8 per pass from a TAPS/FEEDBACK section (dense or sparse)."""
    status, values = _dense_pass_values(np.frombuffer(data, np.int8), n_passes, default)
    if status:
        raise CorruptChunkError(f"{name} section is shorter than the passes" if status == 1
                                else f"{name} section does not match the passes")
    return values


@numba.njit(cache=True)
def _dense_pass_values(values, n, default):
    """(status: 0 ok, 1 short, 2 mismatched; the n values): dense, n bytes; sparse, _SPARSE,
    a bit per pass (most significant first) marking the values that are not `default`, then
    those values."""
    dense = np.full(n, default, np.int8)
    if values.size == 0 or values[0] != _SPARSE:
        if values.size != n:
            return 1 if values.size < n else 2, dense
        dense[:] = values
        return 0, dense
    bits = (n + 7) // 8
    if values.size < 1 + bits:
        return 2, dense
    at = 1 + bits
    for i in range(n):
        if values[1 + i // 8] >> (7 - i % 8) & 1:
            if at == values.size:
                return 2, dense
            dense[i], at = values[at], at + 1
    return (0 if at == values.size else 2), dense


def _fitted(x, p0, p1, unit, default):
    """Least-squares parameter k (int8) of a prediction linear in it, p0 + (k / unit)(p1 - p0),
    given p0 and p1 (the prediction at k = unit) for targets x; default if it cannot be fitted."""
    with np.errstate(over="ignore", invalid="ignore"):
        d = p1 - p0
        num, den = float(np.dot(x - p0, d)), float(np.dot(d, d))
    if not (den > 0 and np.isfinite(num) and np.isfinite(den)):
        return default
    return int(np.clip(np.rint(num / den * unit), -127, 127))


def _gather(volume, geometry):
    return interpolation.pass_gather(volume.reshape(-1), *geometry)


def _pass_contexts(recon, qmag, geometry, p, eb):
    """Contexts of the pass's codes and of its run flags (level, busiest neighbour bucket)."""
    ctx = np.empty(interpolation.pass_size(*geometry), np.int64)
    runs = np.zeros(-(-ctx.size // GROUP), np.int64)
    interpolation.pass_contexts(recon.reshape(-1), qmag.reshape(-1), *geometry, p.level,
                                interpolation.gradient_thresholds(eb),
                                ctx, runs, GROUP.bit_length() - 1)
    return ctx, FLAG_CONTEXT + 3 * p.level + runs


def _add_in_runs(coder, ctx, flag_ctx, q, esc):
    """A pass's codes: per run of GROUP consecutive targets, a flag (is any code non-zero?),
    then the codes of the run if it is flagged.  Smooth fields skip most codes altogether."""
    busy = np.zeros(flag_ctx.size * GROUP, bool)
    busy[:q.size] = (q != 0) | esc
    flags = busy.reshape(-1, GROUP).any(axis=1)
    coder.add(*_interleaved_runs(ctx, flag_ctx, q, esc, flags, GROUP))


@numba.njit(cache=True)
def _interleaved_runs(ctx, flag_ctx, q, esc, flags, group):
    """(contexts, codes, escaped) in stream order: each run's flag, then its codes if flagged."""
    n = flags.size + np.count_nonzero(flags) * group
    c_out, q_out, e_out = np.empty(n, np.int64), np.empty(n, np.int32), np.zeros(n, np.bool_)
    o = 0
    for r in range(flags.size):
        c_out[o], q_out[o] = flag_ctx[r], flags[r]
        o += 1
        if flags[r]:
            for i in range(r * group, min((r + 1) * group, q.size)):
                c_out[o], q_out[o], e_out[o] = ctx[i], q[i], esc[i]
                o += 1
    return c_out[:o], q_out[:o], e_out[:o]


@numba.njit(cache=True)
def _gap_stream(ctx, q, esc, gap_context, gap_max):
    """A pass's codes as zero gaps (format v5, `interpolation.pass_decode_gaps`): (contexts,
    codes, escaped) of the gap symbols (context gap_context + the gradient bucket of the
    gap's first target, capped at 2) and the non-zero codes, in stream order."""
    n = q.size
    c_out, q_out = np.empty(2 * n + 1, np.int64), np.zeros(2 * n + 1, np.int32)
    e_out = np.zeros(2 * n + 1, np.bool_)
    i = o = 0
    j = 0                                           # the next non-zero code from i on
    while i < n:
        j = max(j, i)
        while j < n and q[j] == 0 and not esc[j]:
            j += 1
        c_out[o] = gap_context + min(ctx[i] % 4, 2)
        if j == n:                                  # the rest of the pass is 0
            e_out[o] = True
            return c_out[:o + 1], q_out[:o + 1], e_out[:o + 1]
        q_out[o] = min(j - i, gap_max)
        o += 1
        if j - i >= gap_max:                        # gap_max codes 0, then another gap
            i += gap_max
            continue
        c_out[o], q_out[o], e_out[o] = ctx[j], q[j], esc[j]   # the non-zero code at j
        o += 1
        i = j + 1
    return c_out[:o], q_out[:o], e_out[:o]


def _take_in_runs(coder, ctx, flag_ctx):
    """Inverse of the flags-first run coding of formats v1/v2: (q, escaped) shaped like ctx."""
    flags, bad = coder.take(flag_ctx)
    if bad.any() or flags.min(initial=0) < 0 or flags.max(initial=0) > 1:
        raise CorruptChunkError("entropy-coded section holds an invalid run flag")
    q, esc = np.zeros(ctx.size, np.int32), np.zeros(ctx.size, bool)
    _to_flagged_runs(q, esc, *coder.take(_in_flagged_runs(ctx, flags, GROUP)), flags, GROUP)
    return q, esc


@numba.njit(cache=True)
def _in_flagged_runs(values, flags, group):
    """The values in the runs (of `group` consecutive values) whose flag is set, in order."""
    out = np.empty(min(values.size, int(np.count_nonzero(flags)) * group), values.dtype)
    o = 0
    for r in range(flags.size):
        if flags[r]:
            for i in range(r * group, min((r + 1) * group, values.size)):
                out[o] = values[i]
                o += 1
    return out[:o]


@numba.njit(cache=True)
def _to_flagged_runs(q, esc, q_runs, esc_runs, flags, group):
    """Inverse of `_in_flagged_runs` for the decoded codes (the other runs stay 0)."""
    o = 0
    for r in range(flags.size):
        if flags[r]:
            for i in range(r * group, min((r + 1) * group, q.size)):
                q[i], esc[i] = q_runs[o], esc_runs[o]
                o += 1


def _choose_blocks(net, x, fr, eb, dtype, cost):
    """The blocks of volume x the SWAE codes: every full finite block, or (given the
    interpolation's estimated cost map) those where the SWAE is estimated cheaper, if together
    they save SWAE_MIN_SAVING of the volume's cost.  From 64 blocks on, every 8th block is tried
    first, and the SWAE skipped when those are not estimated to save an 8th of that."""
    grid = swae.block_grid(x.shape)
    if not np.prod(grid):
        return None
    eligible = ~swae.blocks_of(fr, grid).reshape(-1, swae.B ** 3).any(axis=1)
    xb = swae.blocks_of(x, grid)[eligible]
    if not len(xb):
        return None
    interp_cost, needed = None, 0.0
    if cost is not None:
        interp_cost = swae.blocks_of(cost, grid)[eligible].reshape(len(xb), -1).sum(axis=1)
        needed = SWAE_MIN_SAVING * cost.sum()
        if len(xb) >= 64 and _swae_trial(net, xb[::8], eb, dtype, interp_cost[::8])[1] < needed / 8:
            return None
    wins, saving, latents, c, h, q, esc, r = _swae_trial(net, xb, eb, dtype, interp_cost)
    if not wins.any() or saving < needed:
        return None
    chosen = np.zeros(eligible.size, bool)
    chosen[np.flatnonzero(eligible)[wins]] = True
    return grid, chosen, latents[wins], c[wins], h[wins], q[wins], esc[wins], r[wins], xb[wins]


def _swae_trial(net, xb, eb, dtype, interp_cost):
    """Code blocks xb by the SWAE; wins: blocks estimated cheaper than interp_cost (all if None),
    and the estimated bits they save."""
    latents, c, h, pred = swae.encode(net, xb)
    q, esc, r = quantize(xb, pred, eb, dtype)
    wins, saving = np.ones(len(xb), bool), 0.0
    if interp_cost is not None:
        swae_cost = 8 * swae.side_size(net, 1) + _cost(q, esc).reshape(len(xb), -1).sum(axis=1)
        wins = swae_cost < interp_cost
        saving = float((interp_cost - swae_cost)[wins].sum())
    return wins, saving, latents, c, h, q, esc, r


def _encode_values(array, values, free, eb, context_model, net=None, picks=None, costs=None):
    """Sections of a coded chunk: interpolation alone, or after the SWAE blocks in `picks`
    (one entry per volume).  `costs`: a list to receive each volume's estimated cost map."""
    dtype = array.dtype
    st = _Streams(context_model, gaps=not picks)
    block_maps, side = [], []
    for v in range(values.shape[0]):
        x, fr = values[v], free[v]
        recon, qmag, known = np.zeros_like(x), np.zeros(x.shape, np.int8), None
        resid = np.zeros_like(x)
        picked = picks[v] if picks else None
        if picked:
            grid, chosen, latents, c, h, q, esc, r, xb = picked
            block_maps.append(chosen)
            side.append((latents, c, h))
            st.add(np.full(q.shape, SWAE_CONTEXT), q, esc)
            st.verbatim.append(xb[esc])
            known = np.zeros(x.shape, bool)
            swae.put_blocks(known, grid, chosen, True)
            swae.put_blocks(recon, grid, chosen, r)
            swae.put_blocks(qmag, grid, chosen, _magnitude(q, esc))
        elif picks:
            block_maps.append(np.zeros(int(np.prod(swae.block_grid(x.shape))), bool))
        cost = None if costs is None else np.zeros(x.shape)
        _interpolate(x, fr, eb, dtype, st, recon, qmag, resid, known, cost)
        if costs is not None:
            costs.append(cost)
    sections = {CODES: st.codes(values.size),
                KINDS: np.packbits(np.array(st.kinds, bool)).tobytes()}
    for tag, values, default in ((TAPS, st.taps, CUBIC_TAP), (FEEDBACK, st.gains, 0)):
        if any(v != default for v in values):
            sections[tag] = _pack_pass_values(values, default)
    if side:
        sections[BLOCKMAP] = np.packbits(np.concatenate(block_maps)).tobytes()
        sections[LATENTS] = swae.pack_side(net, *map(np.concatenate, zip(*side)))
    return _with_side_values(sections, array, free, st.verbatim), st.cost


def _with_side_values(sections, array, free, verbatim):
    """Add the verbatim values (in coding order) and the non-finite values to the sections."""
    verbatim = np.concatenate(verbatim).astype(array.dtype.newbyteorder("<"))
    if verbatim.size:
        sections[VERBATIM] = verbatim.tobytes()
    if free.any():
        sections[NONFINITE] = _pack_nonfinite(array, free.reshape(array.shape))
    return sections


def _encode_lorenzo(array, values, free, eb, context_model=True, budget=np.inf):
    """Sections of a chunk coded by the Lorenzo predictor; None if the codes' estimated cost
    exceeds the budget (not worth entropy coding)."""
    coder = entropy.Encoder(lorenzo.CONTEXT_SETS, None if context_model else [1])
    verbatim, codes = [], []
    for x, fr in zip(values, free):
        q, esc, recon = np.zeros(x.shape, np.int32), np.zeros(x.shape, bool), np.zeros_like(x)
        lorenzo.encode(x, fr, eb, array.dtype == np.float32, q, esc, recon)
        codes.append((q, esc))
        budget -= float(_cost(q, esc).sum())
    if budget < 0:
        return None
    for (q, esc), x in zip(codes, values):
        previous = (np.zeros(q.shape[1:], np.int32), np.zeros(q.shape[1:], bool))
        for q_slice, esc_slice in zip(q, esc):
            coder.add(lorenzo.contexts(*previous), q_slice, esc_slice)
            previous = (q_slice, esc_slice)
        verbatim.append(x[esc])
    return _with_side_values({LORENZO: coder.finish()}, array, free, verbatim)


def _model_or_none(model, predictor):
    """The SWAE to compete with interpolation; in "auto" mode none when it cannot run here."""
    if predictor == "interp":
        return None
    try:
        net = swae.model_for(model)
        net.encode(np.zeros((1, 5, 5, 5), np.float32))
        return net
    except NeuralFilterError:
        if predictor == "swae" or model is not None:
            raise
        return None


def _verbatim(chunk):
    raw = chunk.sections.get(VERBATIM, b"")
    if not raw:
        return _NO_VALUES
    if len(raw) % chunk.dtype.itemsize:
        raise CorruptChunkError("verbatim section does not hold whole values")
    return np.frombuffer(raw, chunk.dtype.newbyteorder("<")).astype(np.float64)


_NO_VALUES = np.zeros(0)             # (writeable, as a filled section's: the same kernel types)


def _finish(out, chunk):
    result = out.reshape(chunk.shape)
    if NONFINITE in chunk.sections:
        _unpack_nonfinite(chunk.sections[NONFINITE], result)
    return result


def _decode_lorenzo(chunk, out):
    out = out.reshape(_volumes(chunk.shape))            # native byte order: compiled kernels
    verbatim = _verbatim(chunk)
    coder = entropy.Decoder(chunk.sections[LORENZO], lorenzo.CONTEXT_SETS, chunk.version < 3)
    used, single = 0, chunk.dtype == np.float32
    for recon in out:
        if chunk.version >= 3:
            work = workspace.zeros("lorenzo", lorenzo.padded(recon.shape), np.float64)
            status, used = lorenzo.decode(*coder.compiled(), verbatim, used, chunk.eb, single,
                                          recon, work)
            coder.check(status)
            continue
        q, esc = np.zeros(recon.shape, np.int32), np.zeros(recon.shape, bool)
        previous = (q[0], esc[0])
        for i in range(len(recon)):
            q[i], esc[i] = coder.take(lorenzo.contexts(*previous))
            previous = (q[i], esc[i])
        if used + np.count_nonzero(esc) > verbatim.size:
            raise CorruptChunkError("verbatim section is shorter than the codes say")
        used = lorenzo.decode_v2(q, esc, verbatim, used, chunk.eb, single, recon)
    if used != verbatim.size:
        raise CorruptChunkError("verbatim section is longer than the codes say")
    coder.finish()
    return _finish(out, chunk)


def _decode_values(chunk, out):
    """Decode a coded chunk into out (every value is written)."""
    if LORENZO in chunk.sections:
        return _decode_lorenzo(chunk, out)
    if CODES not in chunk.sections:
        raise CorruptChunkError("coded chunk has no code section")
    shape4 = _volumes(chunk.shape)
    out = out.reshape(shape4)                          # native byte order: compiled kernels
    verbatim = _verbatim(chunk)
    kinds = np.unpackbits(np.frombuffer(chunk.sections.get(KINDS, b""), np.uint8))
    n_passes = shape4[0] * len(interpolation.volume_layout(shape4[1:])[0])
    if n_passes > kinds.size:
        raise CorruptChunkError("interpolation-kind section is shorter than the passes")
    taps, gains = (_unpack_pass_values(chunk.sections[tag], n_passes, default, name)
                   if tag in chunk.sections else None
                   for tag, default, name in ((TAPS, CUBIC_TAP, "tap"), (FEEDBACK, 0, "feedback")))
    blocks = _block_side(chunk)
    if chunk.version >= 3 and blocks is None:
        used = _decode_interpolated(chunk, out, verbatim, kinds, taps, gains, n_passes)
    else:
        used = _decode_stepwise(chunk, out, verbatim, kinds, taps, gains, blocks)
    if used != verbatim.size:
        raise CorruptChunkError("verbatim section is longer than the codes say")
    return _finish(out, chunk)


def _context_sets(chunk):
    """The context sets a chunk's format version may name (the fourth came with version 4, the
    fifth with version 5)."""
    return CONTEXT_SETS[:3 + (chunk.version >= 4) + (chunk.version >= 5)]


def _decode_interpolated(chunk, out, verbatim, kinds, taps, gains, n_passes):
    """A format v3 or later chunk predicted by interpolation alone, in one compiled call (measured
    1.02-1.10x per 32^3 chunk against step by step); returns how many verbatim values it used."""
    codes, kind, cmap, gaps = entropy.section(chunk.sections[CODES], _context_sets(chunk),
                                              gaps=chunk.version >= 5)
    shape = out.shape[1:]
    _, head, offs = interpolation.volume_layout(shape)
    size = out[0].size
    stage, status, used = interpolation.chunk_decode(
        codes, kind is entropy.OctaveTable, cmap, out, workspace.array("qmag", size, np.int8),
        None if gains is None else workspace.array("resid", size, np.float64), kinds,
        np.full(n_passes, CUBIC_TAP, np.int8) if taps is None else taps,
        np.zeros(n_passes, np.int8) if gains is None else gains, FEEDBACK_UNIT, head, offs,
        _doubled_level_bounds(shape, chunk.eb), _gradient_thresholds(chunk.eb),
        chunk.dtype == np.float32, 2.0 * chunk.eb, verbatim, GROUP.bit_length() - 1, FLAG_CONTEXT,
        gaps)
    entropy.check(stage, status)
    return used


@one_thread
def _decode_stepwise(chunk, out, verbatim, kinds, taps, gains, blocks):
    """Chunks with SWAE blocks and formats v1/v2: the codes taken step by step from an
    `entropy.Decoder` (SWAE residuals, then the passes); returns the verbatim values used."""
    dtype, eb = chunk.dtype, chunk.eb
    coder = entropy.Decoder(chunk.sections[CODES], _context_sets(chunk), chunk.version < 3)
    used = {"verbatim": 0, "kinds": 0, "blocks": 0}

    def restore(pred, ctx):
        """Values coded with the full bound outside the passes (SWAE blocks, first point)."""
        q, esc = coder.take(ctx)
        r = dequantize(pred, q, eb, dtype)
        k, u = int(np.count_nonzero(esc)), used["verbatim"]
        if u + k > verbatim.size:
            raise CorruptChunkError("verbatim section is shorter than the codes say")
        r[esc] = verbatim[u:u + k]
        used["verbatim"] += k
        return r, _magnitude(q, esc)

    single = dtype == np.float32
    edges = _gradient_thresholds(eb)
    for v in range(out.shape[0]):
        recon = out[v]
        qmag, known = workspace.zeros("qmag", recon.shape, np.int8), None
        resid = None if gains is None else workspace.zeros("resid", recon.size, np.float64)
        if blocks:
            net, block_map, latents, c, h = blocks
            grid = swae.block_grid(recon.shape)
            nb = int(np.prod(grid))
            chosen = block_map[used["blocks"]:used["blocks"] + nb].astype(bool)
            used["blocks"] += nb
            if chosen.any():
                k = int(chosen.sum())
                first = int(block_map[:used["blocks"] - nb].sum())
                pred = swae.predict(net, latents[first:first + k], c[first:first + k],
                                    h[first:first + k])
                r, m = restore(pred, np.full(pred.shape, SWAE_CONTEXT))
                known = np.zeros(recon.shape, bool)
                swae.put_blocks(known, grid, chosen, True)
                swae.put_blocks(recon, grid, chosen, r)
                swae.put_blocks(qmag, grid, chosen, m)
        first = known is None or not known[0, 0, 0]       # point 0 is coded on its own
        if first and chunk.version < 3:
            r, m = restore(np.zeros(1), np.zeros(1, np.int64))
            recon[0, 0, 0], qmag[0, 0, 0] = r[0], m[0]
        passes, head, offs = interpolation.volume_layout(recon.shape)
        ws, feedback, twoebs = _pass_parameters(recon.shape, head, offs, kinds, taps, gains,
                                                used["kinds"], eb)
        used["kinds"] += len(passes)
        if chunk.version >= 3:
            status, used["verbatim"] = interpolation.volume_decode(
                recon.reshape(-1), qmag.reshape(-1), resid,
                None if known is None else known.reshape(-1), first, 2.0 * eb, head, offs,
                ws, feedback, twoebs, edges, single, verbatim, used["verbatim"],
                GROUP.bit_length() - 1, FLAG_CONTEXT, *coder.compiled())
            coder.check(status)
            continue
        ws = np.split(ws, head[1:, 8])
        for p, w, gain, twoeb in zip(passes, ws, feedback, twoebs):     # formats v1 and v2
            geometry = interpolation.geometry(recon.shape, p, known)
            w, gain = w.reshape(4, -1), gain if gain else None
            ctx, flag_ctx = _pass_contexts(recon, qmag, geometry, p, eb)
            q, esc = _take_in_runs(coder, ctx, flag_ctx)
            if used["verbatim"] + np.count_nonzero(esc) > verbatim.size:
                raise CorruptChunkError("verbatim section is shorter than the codes say")
            used["verbatim"] = interpolation.pass_restore(
                recon.reshape(-1), qmag.reshape(-1), resid, *geometry, w, gain, q, esc,
                verbatim, used["verbatim"], twoeb, single)
    coder.finish()
    return used["verbatim"]


def _pass_parameters(shape, head, offs, kinds, taps, gains, k, eb):
    """Per pass of a volume (head, offs: its `interpolation.volume_layout`) whose first pass
    has index k in the chunk's per-pass sections, as `interpolation.volume_decode` takes them:
    the weights end to end, the feedback gains (0: none) and twice the level bounds."""
    n = head.shape[0]                                  # (kinds: checked by _decode_values)
    ws = interpolation.volume_weights(head, kinds[k:k + n],
                                      None if taps is None else taps[k:k + n], offs.size)
    feedback = np.zeros(n) if gains is None else gains[k:k + n] / FEEDBACK_UNIT
    return ws, feedback, _doubled_level_bounds(shape, eb)


@functools.lru_cache(maxsize=64)
def _gradient_thresholds(eb):
    """`interpolation.gradient_thresholds` (read-only).  This and `_doubled_level_bounds` are
    cached: one absolute bound serves all of a dataset's chunks."""
    out = interpolation.gradient_thresholds(eb)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def _doubled_level_bounds(shape, eb):
    """2 level_bound(eb, p) for each pass of a volume (read-only)."""
    out = 2.0 * (eb / np.array([_level_divisor(p) for p in interpolation.volume_layout(shape)[0]]))
    out.flags.writeable = False
    return out


def _block_side(chunk):
    """Model, block map and latents of a chunk with SWAE blocks (None without)."""
    if BLOCKMAP not in chunk.sections:
        return None
    net = swae.model_for(chunk.model_hash.hex())
    block_map = np.unpackbits(np.frombuffer(chunk.sections[BLOCKMAP], np.uint8))
    nb = int(np.prod(swae.block_grid(_volumes(chunk.shape)[1:]))) * _volumes(chunk.shape)[0]
    if block_map.size < nb or block_map[nb:].any():
        raise CorruptChunkError(f"block map holds {block_map.size} bits for {nb} blocks")
    block_map = block_map[:nb]
    latents, c, h = swae.unpack_side(net, chunk.sections.get(LATENTS, b""), int(block_map.sum()))
    return net, block_map, latents, c, h


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
