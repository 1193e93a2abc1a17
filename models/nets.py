"""SWAE networks for 5x5x5 blocks (torch): MLP and small 3D-conv variants, plus the losses.

Encoders end in tanh, so latents lie in (-1, 1); decoders use ReLU between layers and a linear output
(the form the integer decoder reproduces).  ``decoder_layers`` exports the decoder as plain arrays.
"""
import torch
from torch import nn

GRID = 5
NV = GRID ** 3


class MLPSWAE(nn.Module):
    """125 -> hidden... -> L -> dec_hidden... -> 125 (dec_hidden defaults to reversed(hidden))."""

    def __init__(self, latent_dim=16, hidden=(128, 64), dec_hidden=None):
        super().__init__()
        dec_hidden = list(reversed(hidden)) if dec_hidden is None else list(dec_hidden)
        self.arch = {"type": "mlp", "latent_dim": int(latent_dim), "hidden": [int(h) for h in hidden],
                     "dec_hidden": [int(h) for h in dec_hidden]}
        enc, d = [nn.Flatten()], NV
        for h in hidden:
            enc += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.encoder = nn.Sequential(*enc, nn.Linear(d, latent_dim), nn.Tanh())
        dec, d = [], latent_dim
        for h in dec_hidden:
            dec += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.decoder = nn.Sequential(*dec, nn.Linear(d, NV), nn.Unflatten(1, (GRID,) * 3))


class ConvSWAE(nn.Module):
    """conv3d encoder; decoder: dense L -> C*125, then 3x3x3 convs C -> C -> 1 (same padding)."""

    def __init__(self, latent_dim=16, channels=8):
        super().__init__()
        c = int(channels)
        self.arch = {"type": "conv", "latent_dim": int(latent_dim), "channels": c}
        self.encoder = nn.Sequential(
            _AddChannel(),
            nn.Conv3d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv3d(c, c, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(c * NV, latent_dim), nn.Tanh())
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c * NV), nn.ReLU(), nn.Unflatten(1, (c, GRID, GRID, GRID)),
            nn.Conv3d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv3d(c, 1, 3, padding=1), nn.Flatten(), nn.Unflatten(1, (GRID,) * 3))


class _AddChannel(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)


def build(arch):
    """Network from an architecture dict (as stored in a model card)."""
    if arch["type"] == "mlp":
        return MLPSWAE(arch["latent_dim"], arch["hidden"], arch.get("dec_hidden"))
    if arch["type"] == "conv":
        return ConvSWAE(arch["latent_dim"], arch["channels"])
    raise ValueError(f"unknown architecture type {arch['type']!r}")


def decoder_layers(decoder):
    """Float decoder -> list of {"kind", "weight", "bias"} numpy dicts (ReLU between them)."""
    out = []
    for m in decoder:
        if isinstance(m, nn.Linear):
            out.append({"kind": "dense", "weight": m.weight.detach().cpu().double().numpy(),
                        "bias": m.bias.detach().cpu().double().numpy()})
        elif isinstance(m, nn.Conv3d):
            if m.kernel_size != (3, 3, 3) or m.padding != (1, 1, 1) or m.stride != (1, 1, 1):
                raise ValueError("only 3x3x3 stride-1 'same' convolutions can be exported")
            out.append({"kind": "conv3d", "weight": m.weight.detach().cpu().double().numpy(),
                        "bias": m.bias.detach().cpu().double().numpy()})
        elif not isinstance(m, (nn.ReLU, nn.Unflatten, nn.Flatten)):
            raise ValueError(f"cannot export decoder module {type(m).__name__}")
    return out


def sliced_wasserstein(z, n_proj=64):
    """Sliced-Wasserstein-2 distance between latents z (n, L) and the uniform prior on [-1, 1]^L."""
    prior = torch.rand_like(z) * 2 - 1
    proj = torch.randn(z.shape[1], n_proj, device=z.device, dtype=z.dtype)
    proj = proj / proj.norm(dim=0, keepdim=True)
    a = torch.sort(z @ proj, dim=0).values
    b = torch.sort(prior @ proj, dim=0).values
    return ((a - b) ** 2).mean()


def noisy_latents(z, levels):
    """Quantization proxy: add uniform noise of one quantization step (1/levels)."""
    return z + (torch.rand_like(z) - 0.5) / levels
