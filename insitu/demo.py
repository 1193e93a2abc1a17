"""Demo: a 3D wave equation on N MPI ranks whose halo exchange is compressed every step.

    mpiexec -n 4 python -m pyneuralfilter.insitu.demo --steps 200 --mode bounded --rel 1e-3

The initial displacement is the BSSN conformal factor chi of ``pyneuralfilter.datagen`` (seed 1,
mean removed, zero initial velocity); the wave equation u_tt = c^2 lap(u) is advanced by leapfrog
with a central Laplacian of order 2, 4 or 6 (``--order``, default 6 as in numerical-relativity
codes; halo width = order / 2 = 3), Courant number 0.4, periodic box, on a 3D Cartesian
decomposition (``MPI.Compute_dims``).  In the same run every rank also advances the reference with
an uncompressed exchange, and at the end the drift between the two (max abs and relative L2
difference over the whole grid) and the bytes each rank sent (raw ghost values against the
compressed messages, headers included) are reported.  ``--mode raw`` sends raw blocks through the
same path: its drift is exactly 0.  ``--rel`` is relative to the range of the initial field and
turned into one absolute bound for all ranks.
"""
import argparse
import json
import sys
import time

import numpy as np

from .halo import HaloExchange


def _split(n, parts, i):
    edges = np.linspace(0, n, parts + 1).astype(int)
    return int(edges[i]), int(edges[i + 1] - edges[i])


#: central second-derivative stencils (one side, centre first) by order of accuracy
STENCILS = {2: (-2.0, 1.0), 4: (-5 / 2, 4 / 3, -1 / 12),
            6: (-49 / 18, 3 / 2, -3 / 20, 1 / 90)}


def run(comm, *, steps=100, mode="bounded", rel=1e-3, n=60, field="bssn_chi", seed=1,
        courant=0.4, model=None, order=6):
    """Advance compressed and reference runs; returns a dict of results (same on every rank)."""
    from mpi4py import MPI
    from .. import datagen
    if order not in STENCILS:
        raise ValueError(f"order must be one of {sorted(STENCILS)}, got {order}")
    coef = [np.float32(c) for c in STENCILS[order]]
    h = len(coef) - 1
    dims = MPI.Compute_dims(comm.size, 3)
    cart = comm.Create_cart(dims, periods=[True] * 3)
    try:
        coords = cart.Get_coords(cart.rank)
        starts, shape = zip(*(_split(n, dims[d], coords[d]) for d in range(3)))
        g = datagen.field(field, n, seed=seed).astype(np.float64)
        g -= g.mean()
        eb = rel * float(g.max() - g.min())
        inner = tuple(slice(h, h + s) for s in shape)
        u0 = np.zeros(tuple(s + 2 * h for s in shape), np.float32)
        u0[inner] = g[tuple(slice(a, a + s) for a, s in zip(starts, shape))]
        ref = HaloExchange(cart, shape, h, mode="raw")
        kw = {"abs": eb} if mode == "bounded" else {}
        cmp_ = HaloExchange(cart, shape, h, mode=mode, model=model, **kw)
        states = {"ref": [u0.copy(), u0.copy()], "cmp": [u0.copy(), u0.copy()]}
        c2 = np.float32(courant ** 2)
        t_exchange = {"ref": 0.0, "cmp": 0.0}
        for _ in range(steps):
            for key, ex in (("ref", ref), ("cmp", cmp_)):
                u, up = states[key]
                t = time.perf_counter()
                ex.exchange(u)
                t_exchange[key] += time.perf_counter() - t
                c = u[inner]
                lap = 3 * coef[0] * c
                for d in range(3):
                    for k in range(1, h + 1):
                        for s in (-k, k):
                            idx = list(inner)
                            idx[d] = slice(h + s, h + s + shape[d])
                            lap += coef[k] * u[tuple(idx)]
                new = up.copy()                    # ghosts are refilled next step
                new[inner] = 2 * c - up[inner] + c2 * lap
                states[key] = [new, u]
        a, b = states["cmp"][0][inner].astype(np.float64), states["ref"][0][inner]
        local = np.array([np.abs(a - b).max(), ((a - b) ** 2).sum(), (b.astype(np.float64) ** 2)
                          .sum()])
        tot = np.empty_like(local)
        cart.Allreduce(local[1:], tot[1:], op=MPI.SUM)
        tot[0] = cart.allreduce(local[0], op=MPI.MAX)
        sent = cart.gather((cmp_.bytes_sent, cmp_.raw_bytes, ref.bytes_sent, cmp_.messages))
        times = cart.gather((t_exchange["cmp"], t_exchange["ref"]))
        res = None
        if cart.rank == 0:
            res = {"order": order, "halo": h, "courant": courant, "ranks": comm.size, "dims": list(dims), "n": n, "field": field, "mode": mode,
                   "rel": rel if mode == "bounded" else None, "abs_bound": eb if mode ==
                   "bounded" else None, "steps": steps, "max_abs_drift": float(tot[0]),
                   "rel_l2_drift": float(np.sqrt(tot[1] / tot[2])),
                   "field_range": float(g.max() - g.min()),
                   "bytes_per_rank": [{"compressed": s[0], "raw_values": s[1],
                                       "raw_messages": s[2], "messages": s[3]} for s in sent],
                   "exchange_s_per_step": {"compressed": max(t[0] for t in times) / steps,
                                           "raw": max(t[1] for t in times) / steps}}
        return cart.bcast(res)
    finally:
        cart.Free()


def format_result(r) -> str:
    bound = f", rel {r['rel']:g} (abs {r['abs_bound']:.3g})" if r["mode"] == "bounded" else ""
    lines = [f"wave equation (order {r['order']}, halo {r['halo']}), {r['field']} {r['n']}^3 on "
             f"{r['ranks']} ranks {r['dims']}, {r['steps']} steps, mode {r['mode']}{bound}",
             f"drift after {r['steps']} steps: max abs {r['max_abs_drift']:.3e} "
             f"({r['max_abs_drift'] / r['field_range']:.2e} of the range), "
             f"relative L2 {r['rel_l2_drift']:.3e}",
             f"exchange time per step: compressed {r['exchange_s_per_step']['compressed']*1e3:.2f}"
             f" ms, raw {r['exchange_s_per_step']['raw']*1e3:.2f} ms (slowest rank)",
             "", "| rank | raw ghost bytes | raw messages (padded to 5³ blocks) | compressed | "
             "ratio vs ghost bytes |", "|---|---|---|---|---|"]
    for i, b in enumerate(r["bytes_per_rank"]):
        lines.append(f"| {i} | {b['raw_values']} | {b['raw_messages']} | {b['compressed']} | "
                     f"{b['raw_values'] / b['compressed']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    from mpi4py import MPI
    p = argparse.ArgumentParser(prog="python -m pyneuralfilter.insitu.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--mode", choices=("bounded", "fixed", "raw"), default="bounded")
    p.add_argument("--rel", type=float, default=1e-3, help="bound relative to the field range")
    p.add_argument("--n", type=int, default=60, help="global grid points per axis")
    p.add_argument("--field", default="bssn_chi")
    p.add_argument("--order", type=int, default=6, choices=sorted(STENCILS),
                   help="accuracy order of the Laplacian; halo width = order / 2")
    p.add_argument("--model", default=None, help="model name or hash (default: shipped default)")
    p.add_argument("--json", default=None, help="also write the results to this file (rank 0)")
    a = p.parse_args(argv)
    res = run(MPI.COMM_WORLD, steps=a.steps, mode=a.mode, rel=a.rel, n=a.n, field=a.field,
              model=a.model, order=a.order)
    if MPI.COMM_WORLD.rank == 0:
        print(format_result(res))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
