"""Independent 5x5x5 blocks (the in-situ case): every block is predicted by the SWAE alone.

    payload = encode_blocks(blocks, rel=1e-3)          # (n, 5, 5, 5) float32/float64
    blocks = decode_blocks(payload)

mode="fixed" sends latents and block normalisation only: a size known in advance
(`fixed_payload_size`), no error bound.  mode="bounded" adds the residual, quantized so that
every value decodes within the bound and entropy coded.
"""
import numpy as np

from . import container as C
from . import entropy, swae
from .codec import (DIGEST, NONFINITE, VERBATIM, _absolute_bound, _check_bound, _digest,
                    _pack_nonfinite, _unpack_nonfinite)
from .errors import CorruptChunkError, UnsupportedDataError
from .quantizer import dequantize, quantize
from .threads import one_thread

LATENTS, RESIDUAL = 16, 17          # section tags of block payloads
MODES = ("bounded", "fixed")


@one_thread
def encode_blocks(blocks, *, abs=None, rel=None, model=None, mode="bounded") -> bytes:
    """Compress n independent 5x5x5 blocks; see the module docstring."""
    blocks = _check_blocks(blocks)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    net = swae.model_for(model)
    finite = np.isfinite(blocks)
    if mode == "fixed":
        if abs is not None or rel is not None:
            raise TypeError("fixed-rate mode takes no error bound")
        if not finite.all():
            raise UnsupportedDataError("fixed-rate mode needs finite values (NaN/Inf present); "
                                       "use mode='bounded'")
        bound_mode, bound, eb = C.BOUND_ABS, 0.0, 0.0
    else:
        bound_mode, bound = _check_bound(abs, rel)
        eb = _absolute_bound(blocks, finite, bound_mode, bound)
    clean = np.where(finite, blocks, 0).astype(blocks.dtype)
    latents, c, h, pred = swae.encode(net, clean)
    sections = {LATENTS: swae.pack_side(net, latents, c, h)}
    decoded = pred.astype(blocks.dtype)
    if mode == "bounded":
        residual, decoded = _encode_residual(blocks, finite, pred, eb)
        sections.update(residual)
    sections[DIGEST] = _digest(decoded)        # what every receiver must decode, bit for bit
    return C.Chunk(C.MODE_CODED, blocks.dtype, blocks.shape, bound_mode, bound, eb,
                   swae.hash_bytes(net), sections).pack()


@one_thread
def decode_blocks(data) -> np.ndarray:
    chunk = C.unpack(data)
    if LATENTS not in chunk.sections or len(chunk.shape) != 4 or chunk.shape[1:] != (5, 5, 5):
        raise CorruptChunkError("not a block payload (no latent section or wrong shape)")
    net = swae.model_for(chunk.model_hash.hex())
    n = chunk.shape[0]
    latents, c, h = swae.unpack_side(net, chunk.sections[LATENTS], n)
    pred = swae.predict(net, latents, c, h)
    out = pred.astype(chunk.dtype) if RESIDUAL not in chunk.sections else _residual(chunk, pred)
    if DIGEST in chunk.sections and chunk.sections[DIGEST] != _digest(out):
        raise CorruptChunkError("decoded blocks differ from the sender's (digest mismatch): the "
                                "ranks compute differently (library versions or platform)")
    return out


def _residual(chunk, pred):
    q, esc = entropy.Decoder(chunk.sections[RESIDUAL], [[0]]).take(np.zeros(pred.shape, np.int64))
    out = dequantize(pred, q, chunk.eb, chunk.dtype)
    verbatim = np.frombuffer(chunk.sections.get(VERBATIM, b""), chunk.dtype.newbyteorder("<"))
    if verbatim.size != np.count_nonzero(esc):
        raise CorruptChunkError("verbatim section does not match the escaped codes")
    out[esc] = verbatim
    out = out.astype(chunk.dtype)
    if NONFINITE in chunk.sections:
        _unpack_nonfinite(chunk.sections[NONFINITE], out)
    return out


def fixed_payload_size(n, model=None) -> int:
    """Exact size in bytes of encode_blocks(..., mode='fixed') for n blocks."""
    net = swae.model_for(model)
    probe = C.Chunk(C.MODE_CODED, np.dtype("<f4"), (n, 5, 5, 5), C.BOUND_ABS, 0.0, 0.0,
                    swae.hash_bytes(net), {LATENTS: b"", DIGEST: bytes(4)}).pack()
    return len(probe) + swae.side_size(net, n)


def _encode_residual(blocks, finite, pred, eb):
    x = np.where(finite, blocks, 0).astype(np.float64)
    q, esc, recon = quantize(x, pred, eb, blocks.dtype, ~finite)
    coder = entropy.Encoder([[0]])
    coder.add(np.zeros(q.shape, np.int64), q, esc)
    sections = {RESIDUAL: coder.finish()}
    decoded = recon.astype(blocks.dtype)
    if esc.any():
        sections[VERBATIM] = x[esc].astype(blocks.dtype.newbyteorder("<")).tobytes()
    if not finite.all():
        sections[NONFINITE] = _pack_nonfinite(blocks, ~finite)
        decoded[~finite] = blocks[~finite]
    return sections, decoded


def _check_blocks(blocks):
    blocks = np.asarray(blocks)
    if blocks.ndim != 4 or blocks.shape[1:] != (5, 5, 5):
        raise UnsupportedDataError(f"blocks must have shape (n, 5, 5, 5), got {blocks.shape}")
    if blocks.dtype.kind != "f" or blocks.dtype.itemsize not in (4, 8):
        raise UnsupportedDataError(f"blocks must be float32 or float64, not {blocks.dtype}")
    return np.ascontiguousarray(blocks, dtype=blocks.dtype.newbyteorder("="))
