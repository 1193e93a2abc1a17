#!/usr/bin/env python
"""The CUDA path against the CPU, in one run on the same blocks: where a GPU changes what.

Measured with the default model on 5x5x5 blocks of seed-1 fields (128^3 each):
  - SWAE encoder (TorchScript, float32) blocks/s on the CPU (1 thread and all threads) and on
    the GPU (host-device copies included), and how often the GPU's latents equal the CPU's, with
    TF32 off (what the codec runs) and on;
  - the integer decoder blocks/s: numpy on the CPU, torch on the GPU, and whether the bytes are
    identical (they must be);
  - the whole codec (nf.encode, predictor "auto" and "swae", 64^3 chunks, rel 1e-3) MB/s with the
    encoder on the CPU and on the GPU, the chunk bytes, and whether the two chunks are identical.

Writes <out>/gpu.md and <out>/gpu.json.  Needs torch; without CUDA it measures the CPU rows only.

    PYTHONPATH=. python benchmarks/bench_gpu.py --out /tmp/gpu
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import pyneuralfilter as nf  # noqa: E402
from pyneuralfilter import swae  # noqa: E402
from fields import load_field  # noqa: E402

FIELDS = ["bssn_chi", "kolmo_u", "lognormal_rho"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="field size")
    p.add_argument("--chunk", type=int, default=64, help="chunk edge for the whole-codec rows")
    p.add_argument("--rel", type=float, default=1e-3)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (best is kept)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results"))
    return p.parse_args(argv)


def best_time(fn, reps, sync=False):
    fn()                                                    # warm-up (compile, load, allocate)
    times = []
    for _ in range(reps):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def blocks_of(a):
    """The normalised 5^3 blocks of a field, as the codec hands them to the encoder."""
    return swae.normalise(swae.blocks_of(a, swae.block_grid(a.shape)))[2]


def run(args):
    cuda = torch.cuda.is_available()
    model = swae.model_for(None)
    fields = {f: load_field(f, args.n, seed=1) for f in FIELDS}
    x = np.concatenate([blocks_of(a) for a in fields.values()])
    res = dict(blocks=len(x), model=model.hash[:16], cuda=cuda,
               gpu=torch.cuda.get_device_name() if cuda else None,
               cpu_threads=torch.get_num_threads(), torch=torch.__version__)

    enc = {}
    for threads in (1, res["cpu_threads"]):
        torch.set_num_threads(threads)
        enc[f"cpu{threads}"] = len(x) / best_time(lambda: model.encode(x, device="cpu"), args.reps)
    torch.set_num_threads(res["cpu_threads"])
    zc = model.encode(x, device="cpu")
    if cuda:
        enc["cuda"] = len(x) / best_time(lambda: model.encode(x, device="cuda"), args.reps, True)
        zg = model.encode(x, device="cuda")
        res["latents_equal"] = float(np.mean(zg == zc))
        res["latents_max_diff"] = int(np.abs(zg.astype(int) - zc).max())
        zt = model.encode(x, device="cuda", tf32=True)
        res["latents_equal_tf32"] = float(np.mean(zt == zc))
    res["encoder_blocks_per_s"] = enc

    q = zc
    dec = {"numpy": len(q) / best_time(lambda: model.decode(q), args.reps)}
    ref = model.decode(q).tobytes()
    if cuda:
        dec["torch_cuda"] = len(q) / best_time(
            lambda: model.decode(q, backend="torch", device="cuda"), args.reps, True)
        res["decoder_identical"] = model.decode(q, backend="torch", device="cuda").tobytes() == ref
    res["decoder_blocks_per_s"] = dec

    rows = []
    c = args.chunk
    for name, a in fields.items():
        chunk = np.ascontiguousarray(a[:c, :c, :c])
        for predictor in ("auto", "swae"):
            row = dict(field=name, predictor=predictor)
            chunks = {}
            for dev in ("cpu", "cuda") if cuda else ("cpu",):
                os.environ["NEURALFILTER_DEVICE"] = dev
                t = best_time(lambda: nf.encode(chunk, rel=args.rel, predictor=predictor),
                              max(1, args.reps // 2), dev == "cuda")
                chunks[dev] = nf.encode(chunk, rel=args.rel, predictor=predictor)
                err = np.abs(nf.decode(chunks[dev]).astype(np.float64) - chunk).max()
                eb = args.rel * float(chunk.max() - chunk.min())
                row[dev] = dict(mb_s=chunk.nbytes / t / 1e6, bytes=len(chunks[dev]),
                                max_err_over_eb=float(err / eb))
                if err > eb:
                    raise SystemExit(f"bound violated: {name} {predictor} {dev}")
            os.environ.pop("NEURALFILTER_DEVICE")
            if cuda:
                row["identical"] = chunks["cpu"] == chunks["cuda"]
            rows.append(row)
    res["codec"] = rows
    return res


def write_markdown(path, res, args):
    e, d = res["encoder_blocks_per_s"], res["decoder_blocks_per_s"]
    t = res["cpu_threads"]
    lines = [f"# CUDA path vs CPU ({res['gpu'] or 'no GPU'}; {t} CPU threads; torch {res['torch']})",
             "", f"Default model {res['model']}, {res['blocks']} blocks of {', '.join(FIELDS)} "
             f"(seed 1, {args.n}^3). Best of {args.reps}.", "",
             "| | CPU 1 thread | CPU all threads | GPU | GPU / CPU all |", "|---|---|---|---|---|",
             f"| SWAE encoder, blocks/s | {e['cpu1']:.3g} | {e[f'cpu{t}']:.3g} | "
             f"{e.get('cuda', float('nan')):.3g} | {e.get('cuda', float('nan')) / e[f'cpu{t}']:.2f} |",
             f"| integer decoder, blocks/s | | {d['numpy']:.3g} (numpy) | "
             f"{d.get('torch_cuda', float('nan')):.3g} (torch) | "
             f"{d.get('torch_cuda', float('nan')) / d['numpy']:.2f} |", ""]
    if res["cuda"]:
        lines += [f"- GPU latents equal to the CPU's: {res['latents_equal']:.6f} of all "
                  f"(TF32 off, as the codec runs; max difference {res['latents_max_diff']}); "
                  f"with TF32 on: {res['latents_equal_tf32']:.6f}.",
                  f"- Integer decoder on the GPU bit-identical to numpy: {res['decoder_identical']}.",
                  ""]
    devs = ("cpu", "cuda") if res["cuda"] else ("cpu",)
    lines += [f"Whole codec, {args.chunk}^3 chunks, rel {args.rel:g} (encoder device only; "
              "decoding never uses the GPU):", "",
              "| field | predictor | " + " | ".join(f"{v} MB/s | {v} bytes" for v in devs)
              + (" | identical chunk |" if res["cuda"] else " |"),
              "|---|---|" + "---|---|" * len(devs) + ("---|" if res["cuda"] else "")]
    for r in res["codec"]:
        lines.append(f"| {r['field']} | {r['predictor']} | "
                     + " | ".join(f"{r[v]['mb_s']:.3g} | {r[v]['bytes']}" for v in devs)
                     + (f" | {r['identical']} |" if res["cuda"] else " |"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    res = run(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_markdown(os.path.join(args.out, "gpu.md"), res, args)
    print(open(os.path.join(args.out, "gpu.md")).read())


if __name__ == "__main__":
    main()
