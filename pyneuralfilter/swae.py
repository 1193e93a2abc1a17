"""The learned predictor: a SWAE predicts each 5x5x5 block from a few quantized latents.

Each block is normalised to [-1, 1] by its centre c and half-range h (stored as float32), the
model's encoder gives integer latents, and the model's integer decoder (bit-exact on every
machine) predicts the block: pred = c + h * decode(latents), in float64.
"""
import numpy as np

from . import models
from .errors import CorruptChunkError

B = 5                              # block edge


def model_for(ref):
    return models.load(ref)


def hash_bytes(model):
    return bytes.fromhex(model.hash)


def normalise(blocks):
    """(c, h) per block as float32, and the blocks normalised to [-1, 1]."""
    flat = blocks.reshape(len(blocks), -1).astype(np.float64)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    c = ((hi + lo) / 2).astype(np.float32)
    h = ((hi - lo) / 2).astype(np.float32)
    scale = np.where(h > 0, h.astype(np.float64), 1.0)
    xn = np.clip((flat - c.astype(np.float64)[:, None]) / scale[:, None], -1, 1)
    return c, h, xn.reshape(blocks.shape).astype(np.float32)


def predict(model, latents, c, h):
    """float64 predictions (n, 5, 5, 5) from latents and the stored normalisation."""
    out = model.decode(latents)
    return c.astype(np.float64)[:, None, None, None] + \
        h.astype(np.float64)[:, None, None, None] * out


def encode(model, blocks):
    """latents (int16), c, h and the prediction that decoding will reproduce exactly."""
    c, h, xn = normalise(blocks)
    latents = model.encode(xn)
    return latents, c, h, predict(model, latents, c, h)


def pack_side(model, latents, c, h):
    """Latents (model.latent_bits each, stored as int8/int16) and the float32 normalisation."""
    ltype = "<i1" if model.latent_bits <= 8 else "<i2"
    return latents.astype(ltype).tobytes() + c.astype("<f4").tobytes() + h.astype("<f4").tobytes()


def unpack_side(model, data, n):
    ltype = np.dtype("<i1" if model.latent_bits <= 8 else "<i2")
    nl = n * model.latent_dim * ltype.itemsize
    if len(data) != nl + 8 * n:
        raise CorruptChunkError(f"latent section holds {len(data)} bytes, expected {nl + 8 * n} "
                                f"for {n} blocks of model {model.hash[:16]}")
    latents = np.frombuffer(data[:nl], ltype).reshape(n, model.latent_dim).astype(np.int16)
    if n and np.abs(latents).max() > model.levels:
        raise CorruptChunkError(f"latents outside [-{model.levels}, {model.levels}] for model "
                                f"{model.hash[:16]}")
    c = np.frombuffer(data[nl:nl + 4 * n], "<f4")
    h = np.frombuffer(data[nl + 4 * n:], "<f4")
    return latents, c, h


def side_size(model, n):
    return n * ((model.latent_dim if model.latent_bits <= 8 else 2 * model.latent_dim) + 8)


def block_grid(shape):
    """Full 5x5x5 blocks along each axis of a 3D volume."""
    return tuple(n // B for n in shape)


def blocks_of(x, grid):
    """The full 5x5x5 blocks of a volume, (n, 5, 5, 5) in C order of the block grid."""
    bz, by, bx = grid
    b = B
    return x[:bz * b, :by * b, :bx * b].reshape(bz, b, by, b, bx, b) \
        .transpose(0, 2, 4, 1, 3, 5).reshape(-1, b, b, b)


def put_blocks(x, grid, chosen, values):
    """Write values into the chosen blocks of volume x (in place)."""
    full = blocks_of(x, grid).copy()
    full[chosen] = values
    bz, by, bx = grid
    b = B
    x[:bz * b, :by * b, :bx * b] = full.reshape(bz, by, bx, b, b, b) \
        .transpose(0, 3, 1, 4, 2, 5).reshape(bz * b, by * b, bx * b)
