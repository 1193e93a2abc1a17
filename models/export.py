"""Float SWAE (torch) -> Model: quantize the decoder to integers, script the encoder, measure, pack."""
import io

import numpy as np
import torch

from . import data, format as fmt, intdecoder, nets
from .model import Model


def encode_float(encoder, blocks, batch=8192):
    """Float encoder latents (n, L) in (-1, 1), float64."""
    encoder = encoder.cpu().eval()
    with torch.no_grad():
        return np.concatenate([encoder(torch.from_numpy(np.asarray(blocks[i:i + batch], np.float32)))
                               .double().numpy() for i in range(0, len(blocks), batch)])


def quantize_latents(z, levels):
    return np.clip(np.round(z * levels), -levels, levels).astype(np.int16)


def decode_float(decoder, q, levels, batch=8192):
    """Float decoder on dequantized latents -> float64 (n, 5, 5, 5)."""
    decoder = decoder.cpu().eval()
    with torch.no_grad():
        return np.concatenate([decoder(torch.from_numpy(q[i:i + batch].astype(np.float32) / levels))
                               .double().numpy() for i in range(0, len(q), batch)])


def metrics(model, net, blocks):
    """PSNR / max error of float and integer decoders on normalised blocks."""
    q = quantize_latents(encode_float(net.encoder, blocks), model.levels)
    rf = decode_float(net.decoder, q, model.levels)
    ri = model.decode(q)
    return {"blocks": int(len(blocks)), "psnr_float": round(data.psnr(blocks, rf), 3),
            "psnr_int": round(data.psnr(blocks, ri), 3),
            "psnr_int_vs_float": round(data.psnr(rf, ri), 3),
            "maxerr_int": float(np.abs(ri - blocks).max()),
            "latent_entropy_bits": round(_entropy(q), 3)}


def _entropy(q):
    """Mean order-0 entropy per latent (bits), a hint of what entropy coding could save."""
    h = 0.0
    for j in range(q.shape[1]):
        p = np.bincount(q[:, j].astype(np.int64) - q.min()) / len(q)
        p = p[p > 0]
        h -= (p * np.log2(p)).sum()
    return h / q.shape[1]


def to_model(net, calib_blocks, card, latent_bits=8, act_bits=12, wfmt="int16", eval_sets=None,
             decoder_layers=None, out_wfmt=None):
    """Build a Model from a trained float net.  eval_sets: {name: normalised blocks}."""
    levels = (1 << (latent_bits - 1)) - 1
    q = quantize_latents(encode_float(net.encoder, calib_blocks), levels)
    layers = decoder_layers if decoder_layers is not None else nets.decoder_layers(net.decoder)
    spec, arrays = intdecoder.quantize(layers, q, levels, act_bits, wfmt, out_wfmt)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net.encoder.cpu().eval()), buf)
    card = dict(card, architecture=net.arch, latent_dim=net.arch["latent_dim"],
                latent_bits=latent_bits, decoder=spec,
                latent_quantization=f"q = clip(round(z * {levels}), -{levels}, {levels}), int16; "
                                    f"z = q / {levels}",
                normalization="per block min-max: (x - (max+min)/2) / ((max-min)/2), 0 if constant")
    model = Model.from_bytes(fmt.pack(card, arrays, buf.getvalue()))
    if eval_sets:
        card["metrics"] = {k: metrics(model, net, v) for k, v in eval_sets.items()}
        model = Model.from_bytes(fmt.pack({k: v for k, v in card.items() if k != "hash"},
                                          arrays, buf.getvalue()))
    return model
