"""Latency model of a compressed exchange: measured codec times, modelled links.

    python -m pyneuralfilter.insitu.latency [--blocks 512] [--field bssn_chi] [--rel 1e-3]

Measures on this machine the time to pack (encode) and unpack (decode) one message of ``--blocks``
5x5x5 blocks (seed-1 field, median of ``--repeats`` runs) and its bytes on the wire, for raw,
fixed-rate and error-bounded messages, then models one point-to-point exchange of that message as

    T = t_encode + bytes / B + t_decode

over each link of bandwidth B (the link's start-up latency is the same for every mode and is left
out; encode and decode are not overlapped with the transfer).  Compression pays when
T_compressed < T_raw, i.e. when

    t_encode + t_decode < (S_raw - S_c) / B   <=>   1/T_c + 1/T_d < (1 - 1/ratio) / B

with throughputs T_c = S_raw / t_encode, T_d = S_raw / t_decode and ratio = S_raw / S_c; so the
break-even bandwidth is  B* = (S_raw - S_c) / (t_encode + t_decode): compression speeds up the
exchange on links slower than B*.
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np

from .exchange import pack_blocks, unpack_blocks
from .halo import slab_to_blocks

#: link name -> bandwidth per direction in bytes/s
LINKS = {"NVLink 4": 450e9, "NVLink 3": 300e9, "PCIe 4 x16": 32e9, "InfiniBand 200G": 25e9,
         "Ethernet 40G": 5e9, "Ethernet 10G": 1.25e9, "Ethernet 1G": 0.125e9}


def sample_blocks(field="bssn_chi", nblocks=512, n=64, seed=1):
    """The first ``nblocks`` 5x5x5 blocks of a seed-1 field (cropped to a multiple of 5)."""
    from .. import datagen
    g = datagen.field(field, n, seed=seed)
    m = (n // 5) * 5
    b = slab_to_blocks(g[:m, :m, :m])
    if nblocks > len(b):
        b = np.concatenate([b] * (-(-nblocks // len(b))))
    return b[:nblocks]


def _median_time(fn, repeats):
    out, ts = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def measure(blocks, *, rel=1e-3, model=None, repeats=3):
    """Encode/decode time and bytes of one message, for raw, fixed and bounded modes."""
    eb = rel * float(blocks.max() - blocks.min())
    res = {}
    for mode, kw in (("raw", {}), ("fixed", {}), ("bounded", {"abs": eb})):
        pack_blocks(blocks[:8], mode=mode, model=model, **kw)         # warm-up (model load)
        t_enc, msg = _median_time(lambda: pack_blocks(blocks, mode=mode, model=model, **kw),
                                  repeats)
        t_dec, out = _median_time(lambda: unpack_blocks(msg, model=model), repeats)
        err = float(np.abs(out.astype(np.float64) - blocks).max())
        res[mode] = {"t_encode": t_enc, "t_decode": t_dec, "bytes": len(msg), "max_err": err}
    raw = blocks.nbytes
    for r in res.values():
        r["ratio"] = raw / r["bytes"]
        saved = raw - r["bytes"]
        t = r["t_encode"] + r["t_decode"]
        r["break_even_Bps"] = saved / t if saved > 0 and t > 0 else 0.0
    res["_meta"] = {"blocks": len(blocks), "values": int(blocks.size), "raw_bytes": raw,
                    "rel": rel, "abs": eb}
    return res


def exchange_time(r, bandwidth):
    return r["t_encode"] + r["bytes"] / bandwidth + r["t_decode"]


def _fmt_t(s):
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def _fmt_bw(b):
    return f"{b / 1e9:.3g} GB/s" if b >= 1e8 else f"{b / 1e6:.3g} MB/s"


def table(res) -> str:
    """Markdown: measured codec costs, then the modelled exchange time per link."""
    meta = res["_meta"]
    modes = ("raw", "fixed", "bounded")
    lines = [f"Message of {meta['blocks']} blocks ({meta['values']} values, {meta['raw_bytes']} "
             f"raw bytes); bounded at rel {meta['rel']:g} (abs {meta['abs']:.3g}).", "",
             "| mode | encode | decode | µs/block enc+dec | values/s enc+dec | bytes | ratio | "
             "max error | break-even B* |", "|---|---|---|---|---|---|---|---|---|"]
    for m in modes:
        r = res[m]
        t = r["t_encode"] + r["t_decode"]
        vps = meta["values"] / t if t > 0 else float("inf")
        be = "—" if m == "raw" else _fmt_bw(r["break_even_Bps"])
        lines.append(f"| {m} | {_fmt_t(r['t_encode'])} | {_fmt_t(r['t_decode'])} | "
                     f"{t / meta['blocks'] * 1e6:.2f} | {vps:.3g} | {r['bytes']} | "
                     f"{r['ratio']:.2f} | {r['max_err']:.3g} | {be} |")
    lines += ["", "| link | bandwidth | raw | fixed | bounded | fastest |",
              "|---|---|---|---|---|---|"]
    for name, bw in LINKS.items():
        ts = {m: exchange_time(res[m], bw) for m in modes}
        best = min(ts, key=ts.get)
        lines.append(f"| {name} | {_fmt_bw(bw)} | " + " | ".join(_fmt_t(ts[m]) for m in modes)
                     + f" | {best} |")
    for m in ("fixed", "bounded"):
        lines.append("")
        lines.append(f"{m}: compression pays on links slower than B* = "
                     f"{_fmt_bw(res[m]['break_even_Bps'])} (ratio {res[m]['ratio']:.2f}, "
                     f"codec {meta['raw_bytes'] / (res[m]['t_encode'] + res[m]['t_decode']) / 1e6:.3g}"
                     f" MB/s of raw data encode+decode).")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pyneuralfilter.insitu.latency",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=512, help="blocks per message")
    p.add_argument("--field", default="bssn_chi")
    p.add_argument("--rel", type=float, default=1e-3)
    p.add_argument("--model", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    res = measure(sample_blocks(a.field, a.blocks), rel=a.rel, model=a.model, repeats=a.repeats)
    print(table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
