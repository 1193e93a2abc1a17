"""The compiled pass kernels equal straightforward numpy arithmetic on strided views."""
import numpy as np
from hypothesis import given, settings, strategies as st
import pytest

from pyneuralfilter import interpolation as I


def reference_neighbours(volume, p):
    """The decoded neighbours (t-3s, t-s, t+s, t+3s) of the pass's targets by slicing: four
    arrays shaped like the target grid, repeating the edge value past the volume's edge."""
    ax, s = p.axis, p.stride
    lines = tuple(slice(None) if a == ax else slice(None, None, s if a < ax else 2 * s)
                  for a in range(3))
    along = lambda sl: tuple(sl if a == ax else slice(None) for a in range(3))
    even = volume[lines][along(slice(None, None, 2 * s))]
    count = len(range(s, volume.shape[ax], 2 * s))
    n = even.shape[ax]
    padded = np.concatenate([even[along(slice(0, 1))], even] +
                            [even[along(slice(n - 1, n))]] * 2, axis=ax)
    return [padded[along(slice(k, k + count))] for k in range(4)]


def reference_targets(volume, p):
    ax, s = p.axis, p.stride
    return volume[tuple(slice(s, None, 2 * s) if a == ax else
                        slice(None, None, s if a < ax else 2 * s) for a in range(3))]


@pytest.mark.parametrize("shape", [(1, 1, 7), (5, 6, 7), (13, 4, 9), (17, 17, 3)])
@pytest.mark.parametrize("cubic, tap, gain", [(True, 16, None), (False, 16, None), (True, -7, None),
                                              (True, 16, 0.375), (False, 16, -0.125),
                                              (True, 16, 0.0)])
@pytest.mark.parametrize("with_known", [True, False])
def test_kernels_match_numpy_reference(shape, cubic, tap, gain, with_known):
    rng = np.random.default_rng(sum(shape))
    recon = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)
    recon.flat[rng.integers(0, recon.size)] = np.inf        # non-finite predictions become 0
    qmag = rng.integers(0, 3, shape).astype(np.int8)
    resid = rng.standard_normal(shape)
    known = rng.random(shape) < (0.2 if with_known else 0.0)
    eb = 0.0371
    for p in I.passes(shape):
        g = I.geometry(shape, p, known if with_known else None)
        sel = ~reference_targets(known, p)
        near = reference_neighbours(recon, p)
        w = I.weights(shape[p.axis], p.stride, cubic, tap)
        along = [1, 1, 1]
        along[p.axis] = -1
        with np.errstate(invalid="ignore", over="ignore"):
            pred = w[0].reshape(along) * near[0]
            for k in (1, 2, 3):
                pred = pred + w[k].reshape(along) * near[k]
            if gain:
                rn = reference_neighbours(resid, p)
                pred = pred + gain * (rn[1] + rn[2])
            pred[~np.isfinite(pred)] = 0.0
            grad = np.abs(near[2] - near[1]) / eb
        qn = reference_neighbours(qmag, p)
        ctx = (p.level * 12 + np.minimum(qn[1] + qn[2].astype(int), 2) * 4
               + (grad >= 1) + (grad >= 4) + (grad >= 16))
        n = I.pass_size(*g)
        assert n == sel.sum()
        out_pred, out_ctx = np.empty(n), np.empty(n, np.int64)
        runs = np.zeros(-(-n // 4), np.int64)
        I.pass_predict(recon.reshape(-1), resid.reshape(-1), *g, w, gain, out_pred)
        I.pass_contexts(recon.reshape(-1), qmag.reshape(-1), *g, p.level,
                        I.gradient_thresholds(eb), out_ctx, runs, 2)
        assert np.array_equal(out_pred, pred[sel])
        assert np.array_equal(out_ctx, ctx[sel])
        padded = np.zeros(runs.size * 4, np.int64)
        padded[:n] = out_ctx % 12 // 4
        assert np.array_equal(runs, padded.reshape(-1, 4).max(axis=1))

        q = rng.integers(-5, 6, n).astype(np.int32)
        esc = rng.random(n) < 0.1
        verbatim = rng.standard_normal(esc.sum() + 3)
        for single in (True, False):
            r, m, res = recon.copy(), qmag.copy(), resid.copy()
            used = I.pass_restore(r.reshape(-1), m.reshape(-1), res.reshape(-1), *g, w, gain, q,
                                  esc, verbatim, 3, 2 * eb, single)
            assert used == 3 + esc.sum()
            want = pred[sel] + q * (2 * eb)
            want = want.astype(np.float32).astype(np.float64) if single else want
            want[esc] = verbatim[3:]
            assert np.array_equal(reference_targets(r, p)[sel], want)
            assert np.array_equal(reference_targets(m, p)[sel],
                                  np.where(esc, 2, np.minimum(np.abs(q), 2)))
            assert np.array_equal(reference_targets(res, p)[sel],
                                  np.where(esc, reference_targets(resid, p)[sel], q * (2 * eb)))
            untouched = np.ones(shape, bool)
            reference_targets(untouched, p)[sel] = False
            assert np.array_equal(r[untouched], recon[untouched])


def test_gather_scatter_round_trip():
    volume = np.arange(7 * 8 * 9, dtype=np.float64).reshape(7, 8, 9)
    known = np.zeros(volume.shape, bool)
    for p in I.passes(volume.shape):
        g = I.geometry(volume.shape, p, known)
        out = I.pass_gather(volume.reshape(-1), *g)
        assert np.array_equal(out, reference_targets(volume, p).ravel())
        target = np.zeros_like(volume)
        I.pass_scatter(target.reshape(-1), *g, out)
        assert np.array_equal(reference_targets(target, p), reference_targets(volume, p))


@settings(max_examples=200, deadline=None)
@given(eb=st.floats(5e-324, 2.0 ** 1000), scale=st.floats(0.5, 20.0), ulps=st.integers(-3, 3))
def test_gradient_thresholds_equal_the_rounded_quotient(eb, scale, ulps):
    """d >= threshold k exactly when fl(d / eb) >= k, also next to k * eb and for subnormals."""
    edges = I.gradient_thresholds(eb)
    for k, edge in zip(I.GRADIENT_EDGES, edges):
        for d in (scale * eb, k * eb, edge):
            for _ in range(abs(ulps)):
                d = np.nextafter(d, np.inf if ulps > 0 else 0.0)
            assert (d >= edge) == (d / eb >= k), (eb, k, d, edge)


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 20), st.integers(1, 40)),
       density=st.sampled_from([0.0, 0.002, 0.05, 0.5]), seed=st.integers(0, 2**16),
       run_bits=st.sampled_from([0, 3, 6]))
def test_busiest_with_block_flags_equals_the_plain_scan(shape, density, seed, run_bits):
    """`busiest_into` skips stretches whose neighbour blocks are clear (nz) or whose run already
    reached 2: per run it must still give max over its targets of min(qmag[t-s] + qmag[t+s], 2)."""
    rng = np.random.default_rng(seed)
    qmag = np.where(rng.random(shape) < density, rng.integers(1, 3, shape), 0).astype(np.int8)
    flat = qmag.reshape(-1)
    nz = np.zeros((flat.size >> I.NZ_BITS) + 1, np.uint8)
    np.maximum.at(nz, np.flatnonzero(flat) >> I.NZ_BITS, 1)
    for p in I.passes(shape):
        known, base, grid, off = I.geometry(shape, p)
        _, lo, hi, _ = reference_neighbours(qmag, p)
        terms = np.minimum(lo.astype(int) + hi, 2).reshape(-1)
        step = 1 << run_bits
        expected = np.array([terms[k:k + step].max() for k in range(0, terms.size, step)])
        got = I.busiest_into(np.empty(flat.size + 1, np.int64), flat, known, base, grid, off,
                             run_bits, nz)
        np.testing.assert_array_equal(got[:expected.size], expected)


def _volume_decode_args(field, rel):
    """The arguments `chunk_decode` hands `volume_decode` for a 32^3 chunk of a field, coded in
    run flags."""
    import pyneuralfilter as nf
    from pyneuralfilter import codec, datagen, entropy
    x = datagen.field(field, 32, seed=1, **({"steps": 200} if field.startswith("gray") else {}))
    choose = codec._Streams.codes
    codec._Streams.codes = lambda self, targets: self.coder.finish()
    try:
        data = nf.encode(x, rel=rel, predictor="interp")
    finally:
        codec._Streams.codes = choose
    calls, decode = [], I.chunk_decode
    codec.interpolation.chunk_decode = lambda *a: calls.append(
        [v.copy() if isinstance(v, np.ndarray) else v for v in a]) or decode(*a)
    try:
        nf.decode(data)
    finally:
        codec.interpolation.chunk_decode = decode
    ((codes, octave, cmap, out, qmag, resid, kinds, taps, gains, gain_unit, head, offs, twoebs,
      edges, single, twoeb, verbatim, run_bits, flag_context, gaps),) = calls
    assert not gaps
    status, alphabet, words, state, *models = entropy.open_section(codes, octave)
    n = len(head)
    return [np.zeros(out[0].size, out.dtype), np.zeros(qmag.size, np.int8),
            None if resid is None else np.zeros(resid.size), None, True, twoeb, head, offs,
            I.volume_weights(head, kinds[:n], taps[:n], offs.size), gains[:n] / gain_unit,
            twoebs, edges, single, verbatim, 0, run_bits, flag_context, state, words, cmap,
            alphabet, *models]


@pytest.mark.parametrize("field, rel, chosen", [("bssn_chi", 1e-3, True),
                                                ("grayscott_u", 1e-2, False)])
def test_code_zero_first_decodes_the_same(field, rel, chosen):
    """`pass_decode`'s code-0 shortcut (zero_first) decodes exactly what the full rANS step
    does: forced on in every pass, and off, both give `volume_decode`'s values and end state."""
    (recon, qmag, resid, known, first, twoeb, head, offs, ws, gains, twoebs, edges, single,
     verbatim, used, run_bits, flag_context, state, words, cmap, alphabet, cum, cum_at, bucket,
     bucket_at, shift) = args = _volume_decode_args(field, rel)
    models = np.empty((12, 8), np.int64)
    assert any(I.level_models_into(models, level, cmap, alphabet, cum, cum_at, bucket_at, shift)
               for level in range(3)) == chosen
    results = []
    for zero_first in ("volume_decode", True, None):
        r, q, res, st = (None if a is None else a.copy() for a in (recon, qmag, resid, state))
        if zero_first == "volume_decode":
            status, u = I.volume_decode(r, q, res, *args[3:17], st, *args[18:])
        else:          # point 0 alone (no passes), then every pass as volume_decode runs it
            status, u = I.volume_decode(r, q, res, known, first, twoeb, head[:0], offs, ws,
                                        gains, twoebs, *args[11:17], st, *args[18:])
            nz = np.zeros((r.size >> I.NZ_BITS) + 1, np.uint8)
            nz[0] = q[0] != 0
            for k, (base, *grid, at, level, _, _) in enumerate(head):
                end = offs.size if k + 1 == len(head) else head[k + 1, 8]
                I.level_models_into(models, level, cmap, alphabet, cum, cum_at, bucket_at, shift)
                gain = None if res is None or gains[k] == 0 else gains[k]
                grid, off = np.array(grid), offs[at:end].reshape(4, -1)
                busiest = I.busiest_into(np.empty(r.size + 1, np.int64), q, known, base, grid,
                                         off, run_bits, nz)
                row_buf = np.empty((3, (1 << run_bits) + 3))
                status, u = I.pass_decode(
                    r, q, res, known, base, grid, off, ws[at:end].reshape(4, -1), gain, models,
                    edges, twoebs[k], single, verbatim, u, run_bits, flag_context + 3 * level, nz,
                    busiest, row_buf, st, words, cmap, alphabet, cum, cum_at, bucket, bucket_at,
                    shift, zero_first)
                assert status == 0
        results.append((status, u, r, q, st))
    for status, u, r, q, st in results[1:]:
        assert status == results[0][0] == 0 and u == results[0][1]
        np.testing.assert_array_equal(r.view(np.uint8), results[0][2].view(np.uint8))
        np.testing.assert_array_equal(q, results[0][3])
        np.testing.assert_array_equal(st, results[0][4])
