"""Model compression: minifloat weights, magnitude and neuron pruning, distillation.

int16 weights are the shipped default; int8 (per-neuron power-of-two scales) is the first step down.
Everything starts from a Model file: its integer decoder is turned back into an exactly equivalent
float decoder (``float_decoder``), which is pruned or distilled and fine-tuned with the model's own
(frozen) encoder, so the latent space -- and the latents a codec stores -- stay the same.  Minifloat
weights (E4M3, E5M2) are an export option: weights are rounded to the 8-bit float grid (per-neuron
power-of-two scale) and re-expressed exactly as integers in the integer decoder (see intdecoder.py).
"""
import io

import numpy as np
import torch
from torch import nn

from . import export
from .intdecoder import weights_to_int


class SWAE(nn.Module):
    """An encoder / decoder pair with its architecture dict (what export.to_model needs)."""

    def __init__(self, encoder, decoder, arch):
        super().__init__()
        self.encoder, self.decoder, self.arch = encoder, decoder, arch


def float_decoder(model):
    """nn.Sequential equal to the model's integer decoder without rounding (dense layers only).

    With integer activation units, layer j computes relu((a @ W.T + B) * 2**-s): the float weights
    are W * 2**-s and B * 2**-s.  The first layer is rescaled to read z = q / levels.
    """
    layers, spec = [], model.decoder.spec["layers"]
    arrays = model._arrays
    for i, ly in enumerate(spec):
        if ly["kind"] != "dense":
            raise ValueError("compression works on MLP decoders only")
        scale = np.ldexp(1.0, -arrays[f"s{i}"].astype(np.int64))
        w = weights_to_int(arrays[f"w{i}"], ly["wfmt"]) * scale[:, None]
        b = arrays[f"b{i}"].astype(np.float64) * scale
        if i == 0:
            w = w * model.levels
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, nn.ReLU()] if i < len(spec) - 1 else [lin, nn.Unflatten(1, (5, 5, 5))]
    return nn.Sequential(*layers)


def as_swae(model, decoder):
    enc = model._load_encoder()
    widths = [m.out_features for m in decoder if isinstance(m, nn.Linear)][:-1]
    return SWAE(enc, decoder, dict(model.card["architecture"], dec_hidden=widths))


def prune_magnitude(decoder, fraction):
    """Zero the fraction of smallest-|w| weights in each Linear layer -> masks (kept = 1)."""
    masks = []
    for m in decoder:
        if isinstance(m, nn.Linear):
            w = m.weight.detach()
            k = int(fraction * w.numel())
            thr = w.abs().flatten().kthvalue(k).values if k > 0 else -1.0
            mask = (w.abs() > thr).to(w.dtype)
            with torch.no_grad():
                m.weight.mul_(mask)
            masks.append(mask)
    return masks


def prune_neurons(decoder, keep):
    """Structured pruning: keep the fraction `keep` of each hidden layer's neurons, ranked by
    |incoming weights| * |outgoing weights| -> a new, smaller decoder."""
    lins = [m for m in decoder if isinstance(m, nn.Linear)]
    new, idx_in = [], None
    for j, lin in enumerate(lins):
        w, b = lin.weight.detach(), lin.bias.detach()
        if idx_in is not None:
            w = w[:, idx_in]
        if j < len(lins) - 1:
            nxt = lins[j + 1].weight.detach()
            score = w.norm(dim=1) * nxt.norm(dim=0)
            n_keep = max(1, int(round(keep * len(score))))
            idx_in = torch.sort(torch.topk(score, n_keep).indices).values
            w, b = w[idx_in], b[idx_in]
        lin2 = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin2.weight.copy_(w)
            lin2.bias.copy_(b)
        new += [lin2, nn.ReLU()] if j < len(lins) - 1 else [lin2, nn.Unflatten(1, (5, 5, 5))]
    return nn.Sequential(*new)


def student_decoder(latent_dim, widths):
    layers, d = [], latent_dim
    for h in widths:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 125), nn.Unflatten(1, (5, 5, 5)))


def fine_tune(model, decoder, blocks, epochs=20, masks=None, teacher=None, distill_weight=0.5,
              batch=256, lr=1e-3, seed=0):
    """Train `decoder` on the model's frozen-encoder latents (noisy, as in training).

    masks: keep pruned weights at zero.  teacher: a float decoder whose outputs the student also
    matches (distillation: loss = (1-w) * MSE(data) + w * MSE(teacher)).
    """
    torch.manual_seed(seed)
    z = torch.from_numpy(export.encode_float(model._load_encoder(), blocks)).float()
    x = torch.from_numpy(np.asarray(blocks, np.float32))
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    lins = [m for m in decoder if isinstance(m, nn.Linear)]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch)):
            zi = z[idx] + (torch.rand(len(idx), z.shape[1]) - 0.5) / model.levels
            out = decoder(zi)
            loss = torch.mean((out - x[idx]) ** 2)
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(zi)
                loss = (1 - distill_weight) * loss + distill_weight * torch.mean((out - t) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if masks is not None:
                with torch.no_grad():
                    for m, k in zip(lins, masks):
                        m.weight.mul_(k)
    return decoder.eval()


def derive(model, decoder, calib_blocks, how, wfmt="int16", eval_sets=None, out_wfmt=None):
    """Export a compressed variant of `model` (same encoder and latents) -> Model."""
    card = {"name": f"{model.name}-{how}" if model.name else how,
            "derived_from": model.hash, "compression": how,
            "command": model.card.get("command", "")}
    net = as_swae(model, decoder)
    return export.to_model(net, calib_blocks, card, model.latent_bits,
                           model.decoder.spec["act_bits"], wfmt, eval_sets, out_wfmt=out_wfmt)
