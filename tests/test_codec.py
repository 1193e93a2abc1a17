"""The codec's contract: the bound on every value, exact NaN/Inf, never bigger than raw."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyneuralfilter as nf
from pyneuralfilter import datagen
from common import absolute_bound, assert_within_bound

HEADER_ALLOWANCE = 200

shapes = st.lists(st.integers(1, 13), min_size=1, max_size=4).map(tuple)
nasty = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(shapes)
    kind = draw(st.sampled_from(["smooth", "noise", "constant", "nasty", "huge", "tiny"]))
    n = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if kind == "smooth":
        grids = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
        a = np.sin(sum(grids)) * draw(st.floats(1e-3, 1e3))
    elif kind == "noise":
        a = rng.standard_normal(shape)
    elif kind == "constant":
        a = np.full(shape, draw(st.floats(-1e30, 1e30)))
    elif kind == "huge":
        a = rng.standard_normal(shape) * (float(np.finfo(dtype).max) / 4)
    elif kind == "tiny":                             # denormals
        a = rng.standard_normal(shape) * np.finfo(dtype).smallest_subnormal * 100
    else:                                            # smooth values with NaN/Inf/extremes sprinkled in
        a = np.cumsum(rng.standard_normal(n)).reshape(shape)
        specials = draw(st.lists(nasty, min_size=1, max_size=min(n, 20)))
        a.flat[rng.choice(n, len(specials), replace=False)] = specials
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype)


bounds = st.one_of(st.builds(dict, abs=st.sampled_from([0.0, 1e-6, 1e-3, 0.1, 10.0, 1e300])),
                   st.builds(dict, rel=st.sampled_from([0.0, 1e-5, 1e-3, 1e-2, 0.5])))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(arrays(), bounds)
def test_bound_holds_on_every_value(array, bound):
    data = nf.encode(array, predictor="interp", **bound)
    assert_within_bound(array, nf.decode(data), absolute_bound(array, **bound))
    assert len(data) <= array.nbytes + HEADER_ALLOWANCE


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(arrays(), bounds, st.sampled_from(["interp", "auto"]))
def test_decoding_into_out_writes_every_value(array, bound, predictor):
    """decode(data, out=...) fills every value, whatever `out` held before (the HDF5 filter
    decodes into a reused array): two different fillings give the same bytes as a new array."""
    data = nf.encode(array, predictor=predictor, **bound)
    fresh = nf.decode(data)
    for filling in (np.nan, 12345.0):
        out = np.full(array.shape, filling, array.dtype)
        assert nf.decode(data, out=out) is out
        assert out.tobytes() == fresh.tobytes()


def test_decoding_into_out_on_every_path():
    rough = np.random.default_rng(3).standard_normal((12, 12, 12))
    smooth = datagen.field("bssn_chi", 16, seed=1).astype(np.float64)
    cases = [(smooth, dict(rel=1e-3)),                               # interpolation
             (rough, dict(rel=1e-4)),                                # Lorenzo or lossless
             (smooth, dict(rel=1e-3, predictor="swae")),             # SWAE blocks
             (rough.astype(np.float32), dict(abs=0.0))]              # stored losslessly
    for array, kw in cases:
        data = nf.encode(array, **kw)
        out = np.full(array.shape, np.nan, array.dtype)
        assert nf.decode(data, out=out).tobytes() == nf.decode(data).tobytes()


@pytest.mark.parametrize("out, why", [
    (np.empty((4, 4, 5), np.float32), "shape"),
    (np.empty((4, 4, 4), np.float64), "dtype"),
    (np.empty((4, 4, 8), np.float32)[:, :, ::2], "contiguous"),
    (np.empty((4, 4, 4), ">f4"), "byte order"),
    (np.frombuffer(bytes(256), np.float32).reshape(4, 4, 4), "read-only")])
def test_decoding_into_an_unfit_out_is_refused(out, why):
    data = nf.encode(np.ones((4, 4, 4), np.float32), abs=1e-3)
    refused = r"cannot decode into .* the chunk holds \(4, 4, 4\) float32"
    with pytest.raises(ValueError, match=refused) as e:
        nf.decode(data, out=out)
    assert isinstance(e.value, nf.OutputMismatchError)


@pytest.mark.parametrize("shape", [(1,), (4, 4, 4), (7, 11, 13), (5, 5, 5), (3, 17, 9, 6), (33, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fields_round_trip(shape, dtype):
    rng = np.random.default_rng(0)
    a = (np.cumsum(rng.standard_normal(shape), axis=-1)).astype(dtype)
    for bound in (dict(abs=1e-3), dict(rel=1e-2)):
        assert_within_bound(a, nf.decode(nf.encode(a, predictor="interp", **bound)),
                            absolute_bound(a, **bound))


def test_compresses_smooth_field():
    a = datagen.field("bssn_chi", 32, seed=1)
    data = nf.encode(a, rel=1e-3)
    assert a.nbytes / len(data) > 20
    assert_within_bound(a, nf.decode(data), absolute_bound(a, rel=1e-3))


def test_swae_predicted_blocks_keep_the_bound():
    a = datagen.field("kolmo_u", 20, seed=1).astype(np.float64)
    a[3, 4, 5] = np.nan
    data = nf.encode(a, rel=1e-3, predictor="swae")
    info = nf.chunk_info(data)
    assert info["model"] is not None and 5 in info["sections"]       # SWAE blocks present
    assert_within_bound(a, nf.decode(data), absolute_bound(a, rel=1e-3))


def test_swae_blocks_in_several_volumes():
    """A 4D chunk with SWAE blocks in each of its volumes (variables or time steps) is coded,
    not stored losslessly by the write-time check: the LATENTS section holds every volume's
    latents, then every centre, then every half-range, as the reader takes them (an encoder
    that wrote them volume by volume failed its own check)."""
    import warnings
    from pyneuralfilter import codec, container, swae
    x = datagen.field("bssn_chi", 20, seed=1)
    a = np.stack([x, x[::-1]])
    n = int(np.prod(swae.block_grid(x.shape)))                # blocks per volume
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        data = nf.encode(a, rel=1e-3, predictor="swae")
    chunk = container.unpack(data)
    assert nf.chunk_info(data)["mode"] == "coded" and len(data) < a.nbytes / 4
    picked = np.unpackbits(np.frombuffer(chunk.sections[codec.BLOCKMAP], np.uint8))[:2 * n]
    assert picked[:n].any() and picked[n:].any()            # SWAE blocks in both volumes
    assert_within_bound(a, nf.decode(data), absolute_bound(a, rel=1e-3))


def test_nonfinite_reproduced_exactly():
    a = np.linspace(0, 1, 300, dtype=np.float32).reshape(3, 10, 10)
    a[0, 0, 0], a[1, 2, 3], a[2, 9, 9] = np.nan, np.inf, -np.inf
    out = nf.decode(nf.encode(a, rel=1e-3))
    assert np.isnan(out[0, 0, 0]) and out[1, 2, 3] == np.inf and out[2, 9, 9] == -np.inf


@pytest.mark.parametrize("bad, error", [
    (dict(), TypeError), (dict(abs=1e-3, rel=1e-3), TypeError),
    (dict(abs=-1.0), ValueError), (dict(rel=float("nan")), ValueError),
    (dict(abs=float("inf")), ValueError), (dict(abs="x"), TypeError)])
def test_bound_arguments_checked(bad, error):
    with pytest.raises(error):
        nf.encode(np.zeros(10, np.float32), **bad)


@pytest.mark.parametrize("a", [np.zeros(5, np.int32), np.zeros(5, np.float16),
                               np.zeros((2,) * 5, np.float32), np.zeros(3, complex)])
def test_unsupported_data_refused(a):
    with pytest.raises(nf.UnsupportedDataError, match="float32 or float64|1 to 4 dimensions"):
        nf.encode(a, abs=1.0)


def test_big_endian_input():
    a = np.linspace(0, 1, 125).reshape(5, 5, 5).astype(">f8")
    out = nf.decode(nf.encode(a, abs=1e-4))
    assert np.abs(out - a).max() <= 1e-4


def test_header_describes_chunk():
    a = np.ones((6, 7, 8), np.float64)
    info = nf.chunk_info(nf.encode(a, rel=1e-3))
    assert info["shape"] == (6, 7, 8) and info["dtype"] == "float64" and info["bound"] == "rel"


def test_nonfinite_values_cost_little():
    a = datagen.field("bssn_chi", 32, seed=1)
    b = a.copy()
    b[1, 2, 3], b[20, 5, 7], b[31, 31, 31] = np.nan, np.inf, -np.inf
    clean, dirty = len(nf.encode(a, rel=1e-3)), len(nf.encode(b, rel=1e-3))
    assert dirty < 1.2 * clean + 100
    assert_within_bound(b, nf.decode(nf.encode(b, rel=1e-3)), absolute_bound(b, rel=1e-3))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(arrays(), st.sampled_from([1e-6, 1e-3, 0.1]))
def test_lorenzo_path_keeps_the_bound(array, abs_bound):
    """The Lorenzo predictor on its own (the encoder picks it only when it codes smaller)."""
    from pyneuralfilter import codec, container
    finite = np.isfinite(array)
    values = array.astype(np.float64).reshape(codec._volumes(array.shape))
    free = ~finite.reshape(values.shape)
    values[free] = 0.0
    sections = codec._encode_lorenzo(array, values, free, abs_bound)
    data = container.Chunk(container.MODE_CODED, array.dtype, array.shape, container.BOUND_ABS,
                           abs_bound, abs_bound, sections=sections).pack()
    assert_within_bound(array, nf.decode(data), abs_bound)


def test_lorenzo_pays_for_its_slower_decoder_where_interpolation_is_sparse():
    """Codes all zero (noise far below the bound): Lorenzo codes a few bytes smaller (no KINDS
    section) but decodes slower, so interpolation is kept; where interpolation's codes are
    dense, the smaller stream wins by any margin."""
    from pyneuralfilter import codec, container
    x = (1e-3 * np.random.default_rng(0).standard_normal((32, 32, 32))).astype(np.float32)
    sections = container.unpack(nf.encode(x, abs=1e-2)).sections
    assert codec.CODES in sections and codec.LORENZO not in sections
    n = x.size
    sparse, dense = int(codec.LORENZO_SPARSE * n) - 1, int(codec.LORENZO_SPARSE * n) + 1
    margin = codec.LORENZO_MARGIN * n
    assert not codec._rougher(sparse - int(margin), sparse, n)
    assert codec._rougher(sparse - int(margin) - 1, sparse, n)
    assert codec._rougher(dense - 1, dense, n) and not codec._rougher(dense, dense, n)


def test_feedback_decode_reads_no_stale_work_array():
    """The decoder does not clear its residual work array (volume_decode writes every value a
    pass with feedback reads): filled with NaN beforehand, the values are the same; and in the
    finest level feedback is used only where it saves FEEDBACK_MIN_SAVING bits per target."""
    from pyneuralfilter import codec, container, workspace
    x = datagen.field("grayscott_u", 24, seed=1, steps=200)
    data = nf.encode(x, rel=1e-3, predictor="interp")
    assert codec.FEEDBACK in container.unpack(data).sections     # the path under test
    want = nf.decode(data)
    workspace.array("resid", x.size, np.float64)[:] = np.nan
    assert nf.decode(data).tobytes() == want.tobytes()
    plain = datagen.field("kolmo_u", 24, seed=1)
    stats = []
    original = codec._best_prediction

    def spy(values, *args):
        best = original(values, *args)
        stats.append((values.size, best[3]))
        return best
    codec._best_prediction = spy
    try:
        saving = codec.FEEDBACK_MIN_SAVING
        codec.FEEDBACK_MIN_SAVING = 0.0
        with_any = nf.encode(plain, rel=1e-3, predictor="interp")
        codec.FEEDBACK_MIN_SAVING = saving
        gated = nf.encode(plain, rel=1e-3, predictor="interp")
    finally:
        codec._best_prediction = original
        codec.FEEDBACK_MIN_SAVING = saving
    n = len(stats) // 2
    assert any(gain for _, gain in stats[:n])               # turbulence: tiny estimated gains
    assert sum(bool(gain) for _, gain in stats[n:]) < sum(bool(gain) for _, gain in stats[:n])
    assert len(gated) <= 1.01 * len(with_any)


def test_swae_blocks_must_be_estimated_to_save_a_percent():
    """"auto" tries SWAE blocks where the SWAE is estimated to beat interpolation, but encodes
    the chunk with them only if together they save SWAE_MIN_SAVING of its estimated cost:
    smaller estimated savings came to nothing in bytes, for twice the encoding time."""
    pytest.importorskip("torch")
    from pyneuralfilter import codec
    a = datagen.field("grayscott_v", 32, seed=1, steps=200)
    net = codec._model_or_none(None, "auto")
    x, eb, costs = a.astype(np.float64)[None], absolute_bound(a, rel=1e-4), []
    free = ~np.isfinite(x)
    codec._encode_values(a, x, free, eb, True, costs=costs)
    gated = codec._choose_blocks(net, x[0], free[0], eb, a.dtype, costs[0])
    saving = codec.SWAE_MIN_SAVING
    try:
        codec.SWAE_MIN_SAVING = 0.0
        picks = codec._choose_blocks(net, x[0], free[0], eb, a.dtype, costs[0])
        ungated = nf.encode(a, rel=1e-4)
    finally:
        codec.SWAE_MIN_SAVING = saving
    assert gated is None and picks is not None and picks[1].any()
    assert len(nf.encode(a, rel=1e-4)) <= 1.001 * len(ungated)


def test_encoding_holds_thread_pools_to_one_thread(monkeypatch):
    """The codec's small products run on the caller's thread alone: numpy's BLAS and torch's
    OpenMP pools are limited to one thread inside `encode` and restored after (their spinning
    threads took cores from the codec's loops: 2x slower encoding on 2 cores)."""
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info, threadpool_limits
    from pyneuralfilter import swae
    pools = lambda: (torch.get_num_threads(),
                     [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"])
    seen, encode = [], swae.encode
    monkeypatch.setattr(swae, "encode", lambda net, blocks: seen.append(pools()) or
                        encode(net, blocks))
    with threadpool_limits(2):
        before = pools()
        nf.encode(datagen.field("bssn_chi", 15, seed=1), rel=1e-3, predictor="swae")
        after = pools()
    assert seen and all(torch_threads == 1 and set(blas) == {1} for torch_threads, blas in seen)
    assert after == before


def test_swae_predictor_without_full_blocks_still_encodes():
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(4, 4, 4)
    assert_within_bound(a, nf.decode(nf.encode(a, abs=1e-3, predictor="swae")), 1e-3)


@pytest.mark.parametrize("predictor", ["interp", "auto"])
def test_octave_tables_for_wide_codes(predictor):
    """Tight bounds give wide code distributions: the encoder picks octave tables there
    (format v2), and every value still decodes within the bound."""
    from pyneuralfilter import codec, container
    a = datagen.field("lognormal_rho", 24, seed=3)
    data = nf.encode(a, rel=1e-6, predictor=predictor)
    sections = container.unpack(data).sections
    coded = sections.get(codec.CODES) or sections.get(codec.LORENZO)
    assert coded[0] & 0x80, "expected octave tables at a tight bound"
    assert_within_bound(a, nf.decode(data), absolute_bound(a, rel=1e-6))


def test_pass_parameter_sections_round_trip_dense_and_sparse():
    from pyneuralfilter import codec
    for values, default in (([16] * 20, 16), ([16] * 18 + [3, -7], 16), (list(range(-10, 10)), 0),
                            ([0, 0, 127, -127, 0, 0, 0, 0, 0, 5], 0)):
        data = codec._pack_pass_values(values, default)
        assert len(data) <= len(values)
        assert list(codec._unpack_pass_values(data, len(values), default, "tap")) == values
    for values in ([16] * 18 + [3, -7], list(range(20))):         # sparse, dense
        with pytest.raises(nf.CorruptChunkError, match="tap section"):
            codec._unpack_pass_values(codec._pack_pass_values(values, 16), 25, 16, "tap")


@st.composite
def rough_volumes(draw):
    """Volumes big enough for fitted taps and residual feedback (passes of 256+ targets):
    smooth waves plus grid-scale oscillation plus noise, in float32 or float64."""
    shape = tuple(draw(st.lists(st.integers(12, 36), min_size=3, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    a = (np.sin(z / draw(st.floats(1.0, 9.0))) * np.cos(y / 5.0 + x / 7.0)
         + draw(st.floats(0, 1)) * (-1.0) ** (z + y + x)
         + draw(st.floats(0, 0.5)) * rng.standard_normal(shape))
    return (a * draw(st.floats(1e-3, 1e6))).astype(draw(st.sampled_from([np.float32, np.float64])))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(rough_volumes(), st.sampled_from([1e-1, 1e-2, 1e-3, 1e-4, 1e-6]))
def test_bound_holds_with_fitted_taps_and_feedback(array, rel):
    data = nf.encode(array, rel=rel, predictor="interp")
    assert_within_bound(array, nf.decode(data), absolute_bound(array, rel=rel))


@pytest.mark.parametrize("field, n, kw", [
    ("bssn_chi", 24, dict(rel=1e-3)),                                  # runs, mostly zero codes
    ("grayscott_u", 24, dict(rel=1e-3, predictor="interp")),           # taps and feedback
    ("kolmo_u", 16, dict(rel=1e-4)),                                   # Lorenzo
    ("lognormal_rho", 16, dict(rel=1e-5, predictor="interp")),         # octave tables, escapes
    ("bssn_chi", 15, dict(rel=1e-3, predictor="swae")),                # SWAE blocks, known points
])
def test_decoder_reproduces_the_encoder_without_fallback(field, n, kw):
    """The write-time self-check stores a chunk losslessly (with a warning) if the decoder
    disagrees with the encoder: on these paths it must not, so a decoder that drifts fails here
    instead of silently costing ratio."""
    import warnings
    x = datagen.field(field, n, seed=1, **({"steps": 200} if field.startswith("gray") else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        data = nf.encode(x, **kw)
    assert nf.chunk_info(data)["mode"] == "coded"
    eb = nf.chunk_info(data)["abs_bound"]
    assert np.abs(nf.decode(data).astype(np.float64) - x).max() <= eb


@pytest.mark.parametrize("context_set", range(5))
@pytest.mark.parametrize("field, rel", [("bssn_chi", 1e-3), ("grayscott_u", 1e-3)])
def test_every_context_set_decodes_as_the_stepwise_decoder(context_set, field, rel, monkeypatch):
    """The compiled decoder tracks code magnitudes only for the context sets that use them;
    with every set it returns what the step-by-step decoder (which always tracks them) does,
    on chunks with runs of zero codes (bssn_chi) and with residual feedback (Gray-Scott)."""
    from pyneuralfilter import codec, container, entropy
    original = entropy.Encoder
    monkeypatch.setattr(entropy, "Encoder", lambda maps, choices=None, gaps=False: original(
        maps, [context_set] if len(maps) == len(codec.CONTEXT_SETS) else choices))
    monkeypatch.setattr(codec._Streams, "codes", lambda self, targets: self.coder.finish())
    x = datagen.field(field, 24, seed=1, **({"steps": 200} if field == "grayscott_u" else {}))
    data = nf.encode(x, rel=rel, predictor="interp")
    chunk = container.unpack(data)
    assert chunk.sections[codec.CODES][0] & 0x7F == context_set
    fast = nf.decode(data)
    monkeypatch.setattr(codec, "_decode_interpolated", lambda chunk, out, verbatim, kinds, taps,
                        gains, _: codec._decode_stepwise(chunk, out, verbatim, kinds, taps,
                                                         gains, None))
    assert nf.decode(data).tobytes() == fast.tobytes()
    assert np.abs(fast.astype(np.float64) - x).max() <= nf.chunk_info(data)["abs_bound"]


def test_context_model_off_codes_with_one_table():
    """The ablation `context_model=False` codes every value with the single-context set,
    whatever sets later formats add."""
    from pyneuralfilter import codec, container
    data = nf.encode(datagen.field("bssn_chi", 24, seed=1), rel=1e-3, predictor="interp",
                     context_model=False)
    index = container.unpack(data).sections[codec.CODES][0] & 0x3F
    assert not codec.CONTEXT_SETS[index].any()              # every context maps to table 0


def _gap_coded(data):
    from pyneuralfilter import codec, container, entropy
    return bool(container.unpack(data).sections[codec.CODES][0] & entropy.GAPS)


@pytest.fixture
def zero_gaps(monkeypatch):
    """Every chunk without SWAE blocks coded in zero gaps, whatever they cost."""
    from pyneuralfilter import codec
    monkeypatch.setattr(codec._Streams, "codes", lambda self, targets: (
        self.coder.finish() if self.gap_coder is None else self.gap_coder.finish()))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(array=arrays(), bound=bounds)
def test_bound_holds_in_zero_gaps(zero_gaps, array, bound):
    """Zero gaps (format v5) keep the contract on any data: the bound, NaN/Inf, the size."""
    data = nf.encode(array, **bound)
    assert len(data) <= array.nbytes + HEADER_ALLOWANCE
    assert_within_bound(array, nf.decode(data), absolute_bound(array, **bound))


@pytest.mark.parametrize("field, n, kw", [
    ("lognormal_rho", 32, dict(rel=1e-2)),                             # sparse codes
    ("lognormal_rho", 17, dict(rel=1e-5)),                             # escapes, octave tables
    ("grayscott_u", 24, dict(rel=1e-3)),                               # feedback, dense codes
    ("bssn_chi", 40, dict(rel=1e-4)),                                  # long gaps (> 256)
])
def test_zero_gaps_decode_as_the_encoder_decoded(zero_gaps, field, n, kw):
    """Chunks coded in zero gaps decode without the write-time fallback, within the bound, as
    float32 and float64 and as a 4D array of two volumes."""
    import warnings
    x = datagen.field(field, n, seed=1, **({"steps": 200} if field.startswith("gray") else {}))
    for a in (x, x.astype(np.float64), np.stack([x, x[::-1]])):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            data = nf.encode(a, predictor="interp", **kw)
        assert _gap_coded(data)
        eb = nf.chunk_info(data)["abs_bound"]
        assert np.abs(nf.decode(data).astype(np.float64) - a).max() <= eb


def test_zero_gaps_chosen_where_they_pay():
    """The encoder codes in zero gaps where codes are sparse but spread over every run of 64
    (log-normal density at 3e-2 of this chunk's range), in run flags where codes are dense
    (the same at 1e-3: a gap symbol and a code for most values) or where many runs are all 0
    (BSSN chi at 1e-2: 0.43 symbols per value, fast already; gaps would add 8 % bytes)."""
    density = datagen.field("lognormal_rho", 48, seed=1)
    assert _gap_coded(nf.encode(density, rel=3e-2))
    assert not _gap_coded(nf.encode(density, rel=1e-3))
    assert not _gap_coded(nf.encode(datagen.field("bssn_chi", 32, seed=1), rel=1e-2))
