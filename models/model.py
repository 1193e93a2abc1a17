"""Model: a loaded SWAE (integer decoder always; TorchScript encoder when torch is available)."""
import contextlib
import io
import os

import numpy as np

from ..errors import NeuralFilterError
from . import format as fmt
from .intdecoder import IntDecoder


class Model:
    """A block model.  Latents: int16 in [-levels, levels], levels = 2**(latent_bits-1) - 1."""

    def __init__(self, card, arrays, encoder_bytes=None, source="<memory>"):
        self.card = card
        self.hash = card["hash"]
        self.latent_dim = int(card["latent_dim"])
        self.latent_bits = int(card["latent_bits"])
        self.levels = (1 << (self.latent_bits - 1)) - 1
        self.name = card.get("name", "")
        self.source = source
        self._arrays = arrays
        self._encoder_bytes = encoder_bytes
        self._encoders = {}                    # device -> TorchScript encoder
        self.decoder = IntDecoder(card["decoder"], arrays)
        if self.decoder.latent_dim != self.latent_dim or self.decoder.levels != self.levels:
            raise fmt.CorruptModelError(f"{source}: decoder and card disagree on the latent format")

    @classmethod
    def from_bytes(cls, data, source="<bytes>"):
        card, arrays, enc = fmt.unpack(data, source)
        return cls(card, arrays, enc, source)

    def to_bytes(self):
        card = {k: v for k, v in self.card.items() if k != "hash"}
        return fmt.pack(card, self._arrays, self._encoder_bytes)

    @property
    def latent_bytes_per_block(self):
        """Bytes a codec needs per block for the latents at fixed width (no entropy coding)."""
        return (self.latent_dim * self.latent_bits + 7) // 8

    def encode(self, x, device=None, tf32=False):
        """x: (n, 5, 5, 5) float, normalised per block to [-1, 1] -> int16 latents (n, L).

        device: a torch device; default $NEURALFILTER_DEVICE, else "cuda" when there is a GPU,
        else "cpu".  Latents are stored, so the device's rounding never changes a decode; TF32
        is off on the GPU (unless tf32) so that its latents rarely differ from the CPU's."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (5, 5, 5):
            raise ValueError(f"blocks must have shape (n, 5, 5, 5), got {x.shape}")
        torch = _torch()
        device = torch.device(device or default_device())
        enc = self._load_encoder(device)
        with torch.no_grad(), _tf32(torch, tf32):
            z = enc(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
            z = z.double().cpu().numpy()
        return np.clip(np.round(z * self.levels), -self.levels, self.levels).astype(np.int16)

    def decode(self, latents, backend="numpy", device="cpu"):
        """int latents (n, L) -> float64 (n, 5, 5, 5), bit-identical on any machine/backend
        (device: for the torch backend)."""
        return self.decoder.decode(latents, backend, device)

    def _load_encoder(self, device="cpu"):
        """The TorchScript encoder on `device` (loaded once per device)."""
        device = _torch().device(device)
        if device not in self._encoders:
            if self._encoder_bytes is None:
                raise NeuralFilterError(f"model {self.hash[:16]} has no encoder (decode-only file)")
            enc = _torch().jit.load(io.BytesIO(self._encoder_bytes), map_location=device)
            self._encoders[device] = enc.eval()
        return self._encoders[device]

    def __repr__(self):
        return f"<neuralfilter Model {self.name or ''} {self.hash[:16]} L={self.latent_dim} " \
               f"bits={self.latent_bits}>"


def default_device():
    """$NEURALFILTER_DEVICE (e.g. "cpu", "cuda:1"), else "cuda" when torch sees a GPU, else "cpu"."""
    return os.environ.get("NEURALFILTER_DEVICE") or ("cuda" if _torch().cuda.is_available() else "cpu")


def _torch():
    try:
        import torch
    except ImportError:
        raise NeuralFilterError("encoding with a neural model needs torch "
                                "(pip install 'neuralfilter[torch]'); decoding does not") from None
    return torch


@contextlib.contextmanager
def _tf32(torch, allowed):
    """TF32 allowed or not for matmuls and convolutions (restored after; not allowed: full
    float32 on the GPU)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
