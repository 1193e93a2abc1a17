"""The compiled rANS coder: exact round trips, integer models, damaged streams detected."""
import math

import numpy as np
from hypothesis import example, given, settings, strategies as st

from pyneuralfilter import entropy, rans
from pyneuralfilter.quantizer import QMAX


class _Models:
    """Models of some contexts laid out flat as rans.py describes (a context without one: -1)."""

    def __init__(self, n, models):
        """models: {context: rans.model(...)}."""
        contexts = sorted(models)
        cums, buckets = [models[c][0] for c in contexts], [models[c][1] for c in contexts]
        self.cum_at, self.bucket_at = np.full(n, -1, np.int64), np.zeros(n, np.int64)
        self.shift = np.zeros(n, np.int64)
        self.cum_at[contexts] = np.cumsum([0] + [a.size for a in cums[:-1]])
        self.bucket_at[contexts] = np.cumsum([0] + [a.size for a in buckets[:-1]])
        self.shift[contexts] = [models[c][2] for c in contexts]
        self.cum, self.bucket = np.concatenate(cums), np.concatenate(buckets)
        self.arrays = self.cum, self.cum_at, self.bucket, self.bucket_at, self.shift


def _models(rng, sizes, sharpness):
    return _Models(len(sizes), {c: rans.model(rans.frequencies(rng.random(n) ** sharpness))
                                for c, n in enumerate(sizes)})


def _symbols(rng, models, contexts):
    """Symbols drawn from each context's model."""
    cum, cum_at = models.cum, models.cum_at
    out = np.empty(contexts.size, np.int32)
    for c in np.unique(contexts):
        n = int(np.searchsorted(cum_at, cum_at[c], "right"))   # next model's start or the end
        table = cum[cum_at[c]:cum_at[n] if n < cum_at.size else cum.size]
        at = contexts == c
        out[at] = np.searchsorted(table, rng.integers(0, 1 << rans.PRECISION, at.sum()), "right") - 1
    return out


def _decode(words, contexts, models, n_contexts):
    state, out = rans.start(words), np.empty(contexts.size, np.int32)
    status = rans.decode(state, words, contexts, np.arange(n_contexts, dtype=np.uint8),
                         *models.arrays, out)
    return status, out, state


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(0, 3000),
       sizes=st.lists(st.integers(2, 9000), min_size=1, max_size=5),
       sharpness=st.sampled_from([0.5, 4.0, 40.0]))
def test_round_trip(seed, n, sizes, sharpness):
    rng = np.random.default_rng(seed)
    models = _models(rng, sizes, sharpness)
    contexts = rng.integers(0, len(sizes), n)
    symbols = _symbols(rng, models, contexts)
    words = rans.encode(symbols, contexts, *models.arrays)
    status, out, state = _decode(words, contexts, models, len(sizes))
    assert status == rans.OK and np.array_equal(out, symbols)
    assert rans.finished(state, words)


def test_size_is_close_to_the_ideal_code_length():
    rng = np.random.default_rng(1)
    models = _models(rng, [6, 300], 8.0)
    contexts = rng.integers(0, 2, 200_000)
    symbols = _symbols(rng, models, contexts)
    words = rans.encode(symbols, contexts, *models.arrays)
    freq = np.diff(models.cum)
    ideal = -np.log2(freq[models.cum_at[contexts] + symbols] / 2 ** rans.PRECISION).sum() / 8
    assert ideal <= words.nbytes <= ideal + 16


def _reference_frequencies(p):
    """The format's definition of the frequencies (docs/format.md), in plain Python."""
    p = p / p.max()
    spare = (1 << rans.PRECISION) - p.size
    f = 1 + np.floor(p * (spare / math.fsum(p.tolist()))).astype(np.int64)
    f[int(np.argmax(f))] += (1 << rans.PRECISION) - int(f.sum())
    return f


@settings(deadline=None)          # the first example may compile the kernels (cold cache)
@given(p=st.lists(st.floats(0, 1e30), min_size=1, max_size=9000).filter(lambda p: sum(p) > 0))
def test_frequencies_are_exact(p):
    f = rans.frequencies(np.array(p))
    assert f.sum() == 1 << rans.PRECISION and f.min() >= 1
    assert np.array_equal(f, _reference_frequencies(np.array(p)))


_TIES = [1.0, 2.0 ** -53, 2.0 ** -1074, 2.0 ** -1022, 1.0 + 2.0 ** -52, 3.0 * 2.0 ** -54]


@settings(deadline=None)
@given(p=st.lists(st.floats(0, 1e300) | st.sampled_from(_TIES)
                  | st.builds(math.ldexp, st.floats(0.5, 1.0), st.integers(-1100, 1000)),
                  min_size=1, max_size=300))
def test_exact_sum_is_correctly_rounded(p):
    """The sum behind the frequencies equals math.fsum's (correctly rounded, ties to even)."""
    assert rans.exact_sum(np.array(p)) == math.fsum(p)


@settings(deadline=None)
@given(runs=st.lists(st.tuples(st.floats(0, 1e300) | st.sampled_from(_TIES)
                                | st.builds(math.ldexp, st.floats(0.5, 1.0), st.integers(-1100, 1000)),
                                st.integers(0, 5000)), min_size=1, max_size=40))
def test_exact_sum_of_runs_is_the_sum_written_out(runs):
    """counts[i] copies of values[i] sum, correctly rounded, as the values written out do."""
    values, counts = np.array([v for v, _ in runs]), np.array([c for _, c in runs], np.int64)
    acc = np.zeros(rans.LIMBS, np.uint64)
    assert rans.exact_sum_runs(values, counts, acc) == math.fsum(np.repeat(values, counts).tolist())
    assert not acc.any()                                       # left zeroed for the next table
    assert rans.exact_sum_into(np.repeat(values, counts), acc) == math.fsum(np.repeat(values, counts))
    assert not acc.any()


def test_exact_sum_ties():
    assert rans.exact_sum(np.array([1.0, 2.0 ** -53])) == 1.0                    # to even
    assert rans.exact_sum(np.array([1.0 + 2.0 ** -52, 2.0 ** -53])) == 1.0 + 2.0 ** -51
    assert rans.exact_sum(np.array([1.0, 2.0 ** -53, 2.0 ** -1074])) == 1.0 + 2.0 ** -52
    assert rans.exact_sum(np.array([2.0 ** -1074] * 3)) == 3 * 2.0 ** -1074
    assert rans.exact_sum(np.zeros(4)) == 0.0


@settings(deadline=None)
@given(K=st.integers(0, QMAX), codes=st.lists(st.integers(0, 255), min_size=28, max_size=28))
@example(K=5, codes=[255] * 28)                          # no probability at all
@example(K=QMAX, codes=[0] * 28)                         # the widest, every run alike
@example(K=QMAX, codes=[255, 255] + [40] * 26)           # the mode in the first run
def test_octave_frequencies_per_run_equal_the_definition(K, codes):
    """An OctaveTable's frequencies, computed once per run of equal probabilities, are those of
    the format's definition applied to every symbol's probability."""
    codes = np.array(codes[:entropy.OctaveTable.size(K)], np.uint8)
    n = 2 * K + 2
    f = np.empty(n, np.int64)
    runs = np.empty(entropy.RUNS, np.int64), np.empty(entropy.RUNS, np.int64), np.empty(entropy.RUNS)
    ok = entropy._octave_frequencies(codes, K, f, np.zeros(rans.LIMBS, np.uint64), *runs)
    p = entropy.OctaveTable(codes).probabilities(K)
    assert ok == (p.max() > 0)
    if ok:
        assert np.array_equal(f, _reference_frequencies(p))


def test_model_buckets():
    """Bucket b holds the symbol whose interval contains b << shift."""
    f = rans.frequencies(np.random.default_rng(4).random(700) ** 8)
    cum, bucket, shift = rans.model(f)
    starts = np.arange(bucket.size, dtype=np.int64) << shift
    assert np.array_equal(bucket, np.searchsorted(cum.astype(np.int64), starts, "right") - 1)


def test_damage_is_detected():
    rng = np.random.default_rng(2)
    models = _models(rng, [40], 4.0)
    contexts = np.zeros(5000, np.int64)
    words = rans.encode(_symbols(rng, models, contexts), contexts, *models.arrays)
    status, _, _ = _decode(words[:words.size // 2], contexts, models, 1)
    assert status == rans.EXHAUSTED
    status, _, state = _decode(np.append(words, np.uint32(7)), contexts, models, 1)
    assert status == rans.OK and not rans.finished(state, np.append(words, np.uint32(7)))
    flipped = words.copy()
    flipped[words.size // 2] ^= 1 << 9
    status, _, state = _decode(flipped, contexts, models, 1)
    assert status != rans.OK or not rans.finished(state, flipped)


def test_context_without_model():
    rng = np.random.default_rng(3)
    models = _Models(2, {0: rans.model(rans.frequencies(rng.random(10)))})
    words = rans.encode(np.zeros(3, np.int32), np.zeros(3, np.int64), *models.arrays)
    status, _, _ = _decode(words, np.array([0, 1, 0]), models, 2)
    assert status == rans.NO_TABLE


def test_step_if_agrees_with_the_full_step():
    """`step_if` takes a symbol's slots exactly when `step_at` decodes that symbol, with the
    same new states; otherwise it leaves the states as they were."""
    rng = np.random.default_rng(5)
    cum, bucket, shift = rans.model(rans.frequencies(rng.random(12) ** 4))
    for x in rng.integers(int(rans.L), 2 ** 63, 500, dtype=np.uint64):
        s, y1, x1 = rans.step_at(np.uint64(x), np.uint64(7), 0, 0, shift, cum, bucket)
        for k in range(12):
            hit, y2, x2 = rans.step_if(np.uint64(x), np.uint64(7), int(cum[k]),
                                       int(cum[k + 1] - cum[k]))
            assert hit == (s == k)
            assert (int(y2), int(x2)) == ((int(y1), int(x1)) if hit else (int(x), 7))


def test_refill_takes_a_word_only_when_the_state_is_below_L():
    """`refill` shifts in the word at pos exactly when y < L; past the end of the words (none
    at all included) it shifts in 0 and still advances, so that decoders report EXHAUSTED."""
    words = np.array([0xDEADBEEF, 5], np.uint32)
    low, high = np.uint64(int(rans.L) - 1), np.uint64(int(rans.L))
    assert rans.refill(high, words, 0) == (high, 0)
    assert rans.refill(low, words, 0) == ((int(low) << 32) | 0xDEADBEEF, 1)
    assert rans.refill(low, words, 1) == ((int(low) << 32) | 5, 2)
    assert rans.refill(low, words, 2) == (int(low) << 32, 3)
    assert rans.refill(low, np.zeros(0, np.uint32), 0) == (int(low) << 32, 1)
    assert rans.refill(high, np.zeros(0, np.uint32), 0) == (high, 0)
