"""Train an SWAE on 5x5x5 blocks and export it as a .nfm model file.

    python -m pyneuralfilter.models.train builtin:bssn_chi:64:0 data.h5:/fields/* --out models/

Loss: MSE of the reconstruction from noisy latents (uniform noise of one quantization step, the
proxy for latent quantization) + sw_weight * sliced-Wasserstein distance to the uniform prior on
[-1, 1]^L.  Adam (learning rate halved on validation plateaus), early stopping on validation MSE,
a checkpoint after each epoch (--resume continues from it).
"""
import argparse
import os
import shlex
import sys
import time

import numpy as np


def parse_args(argv):
    p = argparse.ArgumentParser(prog="neuralfilter train", description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="file.h5:/path/dataset (globs ok) or "
                   "builtin:<field>:<n>:<seed>[:key=value]")
    p.add_argument("--out", default=".", help="folder for <hash16>.nfm (default: .)")
    p.add_argument("--name", default="", help="model name recorded in the card")
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--hidden", default="128,64", help="MLP encoder widths, mirrored in the decoder")
    p.add_argument("--channels", type=int, default=8, help="conv variant channels")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--latent-bits", type=int, default=8, help="uniform latent quantization bits")
    p.add_argument("--act-bits", type=int, default=12, help="integer decoder activation bits")
    p.add_argument("--wfmt", choices=("int16", "int8", "e4m3", "e5m2"), default="int16",
                   help="integer decoder weight grid (int16: ~0.1 dB from the float decoder; int8 "
                        "lost 1.5-3 dB on BSSN fields with the general model)")
    p.add_argument("--out-wfmt", choices=("int16", "int8", "e4m3", "e5m2"), default=None,
                   help="weight grid of the decoder's output layer (default: --wfmt)")
    p.add_argument("--sw-weight", type=float, default=0.0, help="sliced-Wasserstein weight")
    p.add_argument("--no-noise", action="store_true", help="train without latent noise")
    p.add_argument("--transform", choices=("none", "pos_log", "zscore"), default="none")
    p.add_argument("--stride", type=int, default=5, help="block stride (<5: overlapping blocks)")
    p.add_argument("--augment", action="store_true", help="random axis flips/permutations")
    p.add_argument("--eval", nargs="*", default=[], help="extra inputs for test metrics (e.g. seed 1)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=10, help="early stopping patience (epochs)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop training after this (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--checkpoint", default="", help="checkpoint file (default: <out>/train.ckpt)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    a.hidden = [int(h) for h in a.hidden.split(",") if h]
    if not 2 <= a.latent_bits <= 15:
        p.error("--latent-bits must be in 2..15 (latents are int16)")
    if not 1 <= a.act_bits <= 16:
        p.error("--act-bits must be in 1..16")
    return a


def _augment(x, rng):
    import torch
    perm = [0] + list(1 + rng.permutation(3))
    x = x.permute(*perm)
    flips = [d + 1 for d in range(3) if rng.random() < 0.5]
    return x.flip(flips) if flips else x


def train(args, log=print):
    """Train per args -> (net, blocks, (train, val, test) indices, history)."""
    import torch
    from tqdm import tqdm
    from . import data, nets
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    blocks, labels = data.load_blocks(args.inputs, args.transform, args.stride)
    tr, va, te = data.split(len(blocks), args.seed)
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"only {len(blocks)} blocks: too few to train and validate")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = nets.build({"type": args.arch, "latent_dim": args.latent_dim, "hidden": args.hidden,
                      "channels": args.channels}).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5,
                                                       patience=max(args.patience // 3, 1))
    levels = (1 << (args.latent_bits - 1)) - 1
    xt = torch.from_numpy(blocks[tr]).to(dev)
    xv = torch.from_numpy(blocks[va]).to(dev)
    ckpt = args.checkpoint or os.path.join(args.out, "train.ckpt")
    state = {"epoch": 0, "best": float("inf"), "best_state": None, "bad": 0, "history": []}
    if args.resume:
        if not os.path.exists(ckpt):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        c = torch.load(ckpt, map_location=dev, weights_only=False)
        net.load_state_dict(c["net"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        state = c["state"]
        torch.set_rng_state(c["torch_rng"])
        rng = c["np_rng"]
        log(f"resumed from {ckpt} at epoch {state['epoch']}")
    t0 = time.time()
    for epoch in range(state["epoch"], args.epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(tr))).to(dev)
        total = 0.0
        bar = tqdm(range(0, len(tr), args.batch), desc=f"epoch {epoch + 1}", leave=False,
                   disable=args.quiet, file=sys.stderr)
        for i in bar:
            x = xt[order[i:i + args.batch]]
            if args.augment:
                x = _augment(x, rng)
            z = net.encoder(x)
            zn = z if args.no_noise else nets.noisy_latents(z, levels)
            loss = torch.mean((net.decoder(zn) - x) ** 2)
            if args.sw_weight:
                loss = loss + args.sw_weight * nets.sliced_wasserstein(z)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
        net.eval()
        with torch.no_grad():                       # validation with real latent quantization
            zq = torch.round(net.encoder(xv) * levels).clamp(-levels, levels) / levels
            err = net.decoder(zq) - xv
            vmse, vmax = float(torch.mean(err ** 2)), float(err.abs().max())
        vpsnr = 10 * np.log10(4.0 / max(vmse, 1e-300))
        rec = {"epoch": epoch + 1, "loss": total / len(tr), "val_psnr": vpsnr, "val_maxerr": vmax}
        state["history"].append(rec)
        log(f"epoch {epoch + 1:3d}  loss {rec['loss']:.3e}  val PSNR {vpsnr:6.2f} dB  "
            f"val max err {vmax:.3e}  ({time.time() - t0:.0f} s)")
        state["epoch"] = epoch + 1
        sched.step(vmse)
        if vmse < state["best"]:
            state["best"], state["bad"] = vmse, 0
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            state["bad"] += 1
        os.makedirs(os.path.dirname(os.path.abspath(ckpt)), exist_ok=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "state": state,
                    "torch_rng": torch.get_rng_state(), "np_rng": rng}, ckpt)
        if state["bad"] >= args.patience:
            log(f"early stop: no validation improvement for {args.patience} epochs")
            break
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            log(f"time budget of {args.max_minutes} min reached")
            break
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    return net.cpu().eval(), blocks, (tr, va, te), labels, state["history"], time.time() - t0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    import torch
    from . import data, export, store
    net, blocks, (tr, va, te), labels, history, seconds = train(args)
    eval_sets = {"test_split": blocks[te]}
    if args.eval:
        eval_sets["eval"] = data.load_blocks(args.eval, args.transform, 5)[0]
        if len(args.eval) > 1:
            for spec in args.eval:
                eval_sets["eval " + spec] = data.load_blocks([spec], args.transform, 5)[0]
    card = {"name": args.name,
            "command": "python -m pyneuralfilter.models.train " + shlex.join(argv),
            "training": {"inputs": labels, "blocks": int(len(blocks)), "split_seed": args.seed,
                         "split": [int(len(tr)), int(len(va)), int(len(te))],
                         "transform": args.transform, "stride": args.stride,
                         "augment": args.augment, "sw_weight": args.sw_weight,
                         "latent_noise": not args.no_noise, "epochs": len(history),
                         "seconds": round(seconds, 1), "torch": torch.__version__,
                         "eval_inputs": args.eval,
                         "best_val_psnr": max((h["val_psnr"] for h in history), default=None)}}
    model = export.to_model(net, blocks[tr], card, args.latent_bits, args.act_bits, args.wfmt,
                            eval_sets, out_wfmt=args.out_wfmt)
    path = store.save(model, args.out)
    for k, m in model.card["metrics"].items():
        print(f"{k}: PSNR float {m['psnr_float']:.2f} dB, int {m['psnr_int']:.2f} dB, "
              f"int vs float {m['psnr_int_vs_float']:.2f} dB, max err {m['maxerr_int']:.3e}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes), hash {model.hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
