"""Training data: read inputs, transform fields, cut 5x5x5 blocks, normalise per block, split.

Input specs: ``file.h5:/path/dataset`` (shell globs allowed in both parts) or
``builtin:<field>:<n>:<seed>[:key=value...]`` (pyneuralfilter.datagen, e.g.
``builtin:grayscott_v:64:0:steps=1000``).
Per-block normalisation is min-max, x_n = (x - center) / halfrange with center = (max + min) / 2 and
halfrange = (max - min) / 2 (constant blocks become 0): exactly what the codec applies at inference.
Field transforms (applied before blocking): none, pos_log (log of fields that are > 0 everywhere;
other fields pass unchanged), zscore (whole-field mean/std).
"""
import fnmatch
import glob

import numpy as np

GRID = 5
TRANSFORMS = ("none", "pos_log", "zscore")


def read_input(spec):
    """-> list of (label, 3D float64 array)."""
    if spec.startswith("builtin:"):
        from .. import datagen
        parts = spec.split(":")
        if len(parts) < 4:
            raise ValueError(f"{spec!r}: expected builtin:<field>:<n>:<seed>[:key=value...]")
        name, n, seed = parts[1], int(parts[2]), int(parts[3])
        kw = {}
        for p in parts[4:]:
            k, _, v = p.partition("=")
            kw[k] = float(v) if "." in v or "e" in v else int(v)
        if name.startswith("grayscott"):                  # both u and v come from one simulation
            arr = datagen.gray_scott(n=n, seed=seed, **kw)[name]
        else:
            arr = datagen.field(name, n, seed, **kw)
        return [(spec, np.asarray(arr, dtype=np.float64))]
    fpat, sep, dpat = spec.rpartition(":")
    if not sep or not fpat:
        raise ValueError(f"{spec!r}: expected file.h5:/path/dataset or builtin:<field>:<n>:<seed>")
    files = sorted(glob.glob(fpat))
    if not files:
        raise FileNotFoundError(f"{spec!r}: no file matches {fpat!r}")
    import h5py
    out = []
    for fn in files:
        with h5py.File(fn, "r") as f:
            names = []
            f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None)
            for n in sorted(x for x in names if fnmatch.fnmatchcase(x, "/" + dpat.lstrip("/"))):
                a = np.asarray(f[n][()], dtype=np.float64)
                if a.ndim != 3:
                    raise ValueError(f"{fn}:{n} has {a.ndim} dims; training needs 3D datasets")
                out.append((f"{fn}:{n}", a))
    if not out:
        raise FileNotFoundError(f"{spec!r}: no 3D dataset matches {dpat!r}")
    return out


def transform(a, mode):
    if mode == "none":
        return a
    if mode == "pos_log":
        return np.log(a) if a.min() > 0 else a
    if mode == "zscore":
        s = a.std()
        return (a - a.mean()) / (s if s > 0 else 1.0)
    raise ValueError(f"unknown transform {mode!r}; choose one of {TRANSFORMS}")


def to_blocks(a, stride=GRID):
    """All 5x5x5 blocks at the given stride (stride 5: the non-overlapping tiling) -> (n, 5, 5, 5)."""
    if any(s < GRID for s in a.shape):
        raise ValueError(f"field of shape {a.shape} is smaller than one {GRID}^3 block")
    v = np.lib.stride_tricks.sliding_window_view(a, (GRID,) * 3)[::stride, ::stride, ::stride]
    return np.ascontiguousarray(v.reshape(-1, GRID, GRID, GRID))


def normalize(blocks):
    """Per-block min-max to [-1, 1] -> (normalised, center, halfrange)."""
    lo = blocks.min(axis=(1, 2, 3), keepdims=True)
    hi = blocks.max(axis=(1, 2, 3), keepdims=True)
    center, half = (hi + lo) / 2, (hi - lo) / 2
    x = np.where(half > 0, (blocks - center) / np.where(half > 0, half, 1.0), 0.0)
    return np.clip(x, -1.0, 1.0), center.ravel(), half.ravel()


def load_blocks(specs, mode="none", stride=GRID):
    """Normalised blocks of every input, concatenated -> (float32 (n, 5, 5, 5), list of labels)."""
    parts, labels = [], []
    for spec in specs:
        for label, a in read_input(spec):
            parts.append(normalize(to_blocks(transform(a, mode), stride))[0])
            labels.append(label)
    return np.concatenate(parts).astype(np.float32), labels


def split(n, seed, fractions=(0.8, 0.1, 0.1)):
    """Deterministic shuffled split of range(n) -> (train, val, test) index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return perm[:a], perm[a:b], perm[b:]


def psnr(ref, x):
    """PSNR of normalised blocks (peak-to-peak range 2)."""
    mse = float(np.mean((np.asarray(ref, np.float64) - np.asarray(x, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)
