"""Built-in synthetic 3D test fields (numpy only, deterministic by seed).

Physically meaningful fields for tests, demos and benchmarks, so that nothing has to be
downloaded: BSSN variables of Brill-Lindquist binary black-hole initial data, a
Kolmogorov-spectrum turbulence component, a log-normal cosmological density and 3D
Gray-Scott reaction-diffusion.  Seeds 0 and 1 give different realizations (train on 0,
test on 1).  Every function returns ``{name: float32 array of shape (n, n, n)}``.
"""
import numpy as np

FIELDS = ("bssn_chi", "bssn_alpha", "bssn_Atxy", "kolmo_u", "grayscott_u", "grayscott_v",
          "lognormal_rho")


def _kgrid(n, box=2 * np.pi):
    k1 = np.fft.fftfreq(n, d=box / n) * 2 * np.pi
    return np.meshgrid(k1, k1, k1, indexing="ij")


def _bowen_york_xy(x, y, z, c, P, S):
    """Component xy of the Bowen-York extrinsic curvature of one boosted, spinning hole."""
    d = (x - c[0], y - c[1], z - c[2])
    r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    n = [di / r for di in d]
    Pn = P[0] * n[0] + P[1] * n[1] + P[2] * n[2]
    boost = 1.5 / r ** 2 * (P[0] * n[1] + P[1] * n[0] + n[0] * n[1] * Pn)
    eps = np.zeros((3, 3, 3))
    eps[0, 1, 2] = eps[1, 2, 0] = eps[2, 0, 1] = 1
    eps[0, 2, 1] = eps[2, 1, 0] = eps[1, 0, 2] = -1
    spin = 0.0
    for k in range(3):
        for m in range(3):
            if eps[k, 0, m]:
                spin = spin + eps[k, 0, m] * S[m] * n[k] * n[1]
            if eps[k, 1, m]:
                spin = spin + eps[k, 1, m] * S[m] * n[k] * n[0]
    return boost + 3.0 / r ** 3 * spin


def bssn(n=64, seed=0, box=16.0):
    """chi = psi^-4, alpha = psi^-2 and A~_xy for two off-grid punctures (seed jitters them)."""
    rng = np.random.default_rng(seed)
    h = box / n
    x1 = (np.arange(n) + 0.5) * h - box / 2
    x, y, z = np.meshgrid(x1, x1, x1, indexing="ij")
    j = lambda s: s * (1 + 0.05 * rng.standard_normal())
    m1, m2 = j(0.5), j(0.5)
    c1 = np.array([j(1.5) + 0.1234 * h, 0.0371 * h + 0.1 * rng.standard_normal(), 0.0613 * h])
    c2 = np.array([-j(1.5) + 0.0789 * h, -0.0529 * h + 0.1 * rng.standard_normal(), 0.0417 * h])
    r1 = np.sqrt((x - c1[0]) ** 2 + (y - c1[1]) ** 2 + (z - c1[2]) ** 2)
    r2 = np.sqrt((x - c2[0]) ** 2 + (y - c2[1]) ** 2 + (z - c2[2]) ** 2)
    psi = 1 + m1 / (2 * r1) + m2 / (2 * r2)
    P1 = np.array([0.0, j(0.1), 0.0])
    S1 = np.array([0.0, 0.0, j(0.05)])
    S2 = np.array([0.0, 0.0, j(0.05)])
    axy = _bowen_york_xy(x, y, z, c1, P1, S1) + _bowen_york_xy(x, y, z, c2, -P1, S2)
    return {"bssn_chi": _f32(psi ** -4), "bssn_alpha": _f32(psi ** -2),
            "bssn_Atxy": _f32(psi ** -6 * axy)}


def kolmogorov(n=64, seed=0, k0=2.0, kd_frac=0.35):
    """x component of a solenoidal von Karman / k^-5/3 Gaussian random velocity, unit std."""
    rng = np.random.default_rng(seed)
    kx, ky, kz = _kgrid(n)
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)
    nz = k > 0
    kd = kd_frac * n / 2
    energy = np.zeros_like(k)
    energy[nz] = k[nz] ** 4 / (k[nz] ** 2 + k0 ** 2) ** (2 + 5 / 6) * np.exp(-(k[nz] / kd) ** 2)
    amp = np.zeros_like(k)
    amp[nz] = np.sqrt(energy[nz] / (4 * np.pi * k[nz] ** 2))
    uk = [np.fft.fftn(rng.standard_normal((n, n, n))) * amp for _ in range(3)]
    div = (kx * uk[0] + ky * uk[1] + kz * uk[2]) / np.where(nz, k ** 2, 1.0)
    u = np.fft.ifftn(uk[0] - kx * div).real
    return {"kolmo_u": _f32(u / u.std())}


def lognormal(n=64, seed=0, ns=-2.5, sigma=1.0, rs_frac=0.5):
    """rho = exp(G - sigma^2/2) for a Gaussian random field G with P(k) ~ k^ns (heavy tailed)."""
    rng = np.random.default_rng(seed)
    kx, ky, kz = _kgrid(n)
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)
    rs = rs_frac * 2 * np.pi / n
    amp = np.zeros_like(k)
    nz = k > 0
    amp[nz] = np.sqrt(k[nz] ** ns) * np.exp(-0.5 * (k[nz] * rs) ** 2)
    g = np.fft.ifftn(np.fft.fftn(rng.standard_normal((n, n, n))) * amp).real
    g = g / g.std() * sigma
    return {"lognormal_rho": _f32(np.exp(g - sigma ** 2 / 2))}


def gray_scott(n=64, seed=0, steps=4000, F=0.035, k=0.062, Du=0.16, Dv=0.08, dt=1.0, nseeds=20):
    """u and v of 3D Gray-Scott reaction-diffusion after `steps` explicit Euler steps."""
    rng = np.random.default_rng(seed)
    u, v = np.ones((n, n, n)), np.zeros((n, n, n))
    for _ in range(nseeds):
        c, r = rng.integers(0, n, 3), rng.integers(2, 5)
        sl = tuple(slice(max(ci - r, 0), min(ci + r, n)) for ci in c)
        u[sl], v[sl] = 0.5, 0.25
    u += 0.01 * rng.standard_normal(u.shape)
    v += 0.01 * rng.standard_normal(v.shape)
    for _ in range(steps):
        uvv = u * v * v
        u, v = (u + dt * (Du * _laplacian(u) - uvv + F * (1 - u)),
                v + dt * (Dv * _laplacian(v) + uvv - (F + k) * v))
    return {"grayscott_u": _f32(u), "grayscott_v": _f32(v)}


def _laplacian(a):
    """7-point periodic Laplacian (dx = 1)."""
    return sum(np.roll(a, s, axis=ax) for ax in range(3) for s in (1, -1)) - 6 * a


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def field(name, n=64, seed=0, **kw):
    """One named field of FIELDS, e.g. ``field("bssn_chi", 64, seed=1)``."""
    maker = {"bssn": bssn, "kolmo": kolmogorov, "lognormal": lognormal, "grayscott": gray_scott}
    prefix = name.split("_")[0]
    if name not in FIELDS:
        raise ValueError(f"unknown field {name!r}; choose one of {', '.join(FIELDS)}")
    return maker[prefix](n=n, seed=seed, **kw)[name]
