"""Range asymmetric numeral systems (rANS), compiled with numba: the entropy coder of format v3.

64-bit state, 32-bit words, probabilities in units of 2^-24 (the layout of Fabian Giesen's
rans64; constriction, which coded formats v1 and v2, uses the same parameters).  Hand-written
because the coder has to run inside the compiled decode loops: constriction's Python API takes
one call per batch of same-model symbols and decodes 40-76 M symbols/s by binary search, while
a per-symbol context lookup here decodes several times faster (benchmarks/bench_codec.py).

Every symbol is coded with the table of its context, so the decoder takes the symbols in their
natural order (no regrouping).  Two coder states alternate from symbol to symbol, so that a
decoder overlaps consecutive symbols' dependency chains.  Decoding looks a symbol up by the top
bits of the state's slot (a small bucket table per model) and a short forward scan.  All
integer arithmetic: identical everywhere.  The encoder starts both states at L and writes their
final values first, so a complete, undamaged stream decodes back to L having read exactly every
word.

The models of a section's contexts are laid out flat (entropy._build_models builds them):
cum (uint32) and bucket (uint16) hold every model's `model` arrays end to end, and per context
cum_at / bucket_at (int64: where its arrays start; cum_at -1: no model) and shift.
"""
import math

import numba
import numpy as np

# The compiled loops that decode a chunk (building its coder models included) and the helpers
# they call run without numba's reference counting: every helper given an array would take and
# drop a reference to it, an atomic increment and decrement per array per call (perf, with
# numba's functions mapped: a quarter of a 32^3 log-normal decode at 1e-2, a third of building
# its models).  Their arrays come from their callers; numba refuses to compile an allocation in
# them.  `_nrt` is an underscored numba option (every numba pyproject allows has it; were it
# dropped, importing pyneuralfilter would fail at once, never decode differently).
NO_NRT = dict(cache=True, _nrt=False)

PRECISION = 24
L = np.uint64(1 << 31)                     # the states stay in [L, 2^64) between symbols
MASK = np.uint64((1 << PRECISION) - 1)
_MAX_BUCKET_BITS = 12
_u = numba.uint64                          # unsigned indices: no negative-index wraparound code

# decode status; the compiled decoders that call `step` add their own checks' outcomes
OK, EXHAUSTED, NO_TABLE, VERBATIM_SHORT, BAD_FLAG, BAD_GAP = range(6)


@numba.njit(cache=True)
def exact_sum(p):
    """The sum of non-negative finite float64 values (a contiguous array) correctly rounded to
    float64 (ties to even), as math.fsum gives it: the values are added exactly into a
    fixed-point accumulator spanning the whole float64 range, so the order does not matter.
    Only the limbs the values reach are visited after the additions (a table's handful of
    probabilities touches a few of the 70)."""
    return exact_sum_into(p, np.zeros(LIMBS, np.uint64))


@numba.njit(**NO_NRT)
def exact_sum_into(p, acc):
    """`exact_sum` with the accumulator acc (LIMBS zeros: 32 bits per limb, carries kept
    above) given, and left zeroed: no allocation per table."""
    first, last = LIMBS, 0                             # limbs written: first ... last + 2
    for u in p.view(np.uint64):
        m, k, sh = _fixed_point(u)
        if not m:
            continue                                   # a zero
        first, last = min(first, k), max(last, k)
        lo, hi = (m & _u(0xFFFFFFFF)) << sh, (m >> _u(32)) << sh
        acc[k] += lo & _u(0xFFFFFFFF)
        acc[k + 1] += (lo >> _u(32)) + (hi & _u(0xFFFFFFFF))
        acc[k + 2] += hi >> _u(32)
    return _rounded(acc, first, last + 2)


@numba.njit(**NO_NRT)
def exact_sum_runs(values, counts, acc):
    """`exact_sum_into` of counts[i] (< 2^31) copies of each values[i], without writing them
    out: each value times its count is added exactly (an octave table's thousands of equal
    probabilities cost one addition)."""
    first, last = LIMBS, 0                             # limbs written: first ... last + 3
    for u, count in zip(values.view(np.uint64), counts):
        m, k, sh = _fixed_point(u)
        if not m or not count:
            continue
        first, last = min(first, k), max(last, k)
        a = (m & _u(0xFFFFFFFF)) * _u(count)           # m count = a mod 2^32 + b 2^32
        b = (m >> _u(32)) * _u(count) + (a >> _u(32))
        for j, limb in enumerate((a & _u(0xFFFFFFFF), b & _u(0xFFFFFFFF), b >> _u(32))):
            v = limb << sh                             # each limb < 2^32: no overflow
            acc[k + j] += v & _u(0xFFFFFFFF)
            acc[k + j + 1] += v >> _u(32)
    return _rounded(acc, first, last + 3)


@numba.njit(cache=True, inline="always")
def _fixed_point(u):
    """The bits u of a non-negative float64 as an integer m times 2^(32 k + sh - 1074) (m = 0:
    a zero; signs ignored), for the fixed-point accumulators of `exact_sum_into`."""
    e = np.int64((u >> _u(52)) & _u(0x7FF))            # biased exponent
    m = u & _u((1 << 52) - 1)
    if e:
        m |= _u(1 << 52)
    pos = max(e - 1, 0)                                # bit of m's lowest bit (2^-1074: bit 0)
    return m, pos >> 5, _u(pos & 31)


@numba.njit(**NO_NRT)
def _rounded(acc, first, last):
    """The sum held in acc[first ... last] (limbs of 32 bits and carries), correctly rounded to
    float64 (ties to even); leaves acc zeroed."""
    if first == LIMBS:
        return 0.0
    k = first                                          # carry: every limb to 32 bits
    while k < LIMBS - 1 and (k <= last or acc[k] >> _u(32)):
        acc[k + 1] += acc[k] >> _u(32)
        acc[k] &= _u(0xFFFFFFFF)
        k += 1
    written = k                                        # acc[first ... written] to clear
    while not acc[k]:                                  # the highest set bit: top
        k -= 1
    top = 32 * k + bit_length(np.int64(acc[k])) - 1
    low = max(top - 52, 0)                             # the 53 bits kept: low ... top
    m = _u(0)
    for j in range(k, (low >> 5) - 1, -1):             # at most 3 limbs, from the top
        skip = _u(max(low - 32 * j, 0))                # bits of limb j below low
        m = (m << (_u(32) - skip)) | (acc[j] >> skip)
    if low > 0 and _bit(acc, low - 1):                 # half an ulp or more below them
        j = (low - 1) >> 5                             # sticky: any bit below that one
        sticky = acc[j] & ((_u(1) << _u((low - 1) & 31)) - _u(1)) != 0
        while not sticky and j > first:
            j -= 1
            sticky = acc[j] != 0
        if sticky or m & _u(1):
            m += _u(1)
    acc[first:written + 1] = 0
    return math.ldexp(float(m), low - 1074)


LIMBS = 70                                             # 2^-1074 ... 2^1024 and carries


@numba.njit(cache=True, inline="always")
def largest(a):
    """(a.max(), np.argmax(a)) of a non-empty array without NaNs, by a loop (numpy's
    reductions allocate: see NO_NRT)."""
    top, at = a[0], 0
    for i in range(1, a.size):
        if a[i] > top:
            top, at = a[i], i
    return top, at


@numba.njit(cache=True, inline="always")
def bit_length(n):
    """int.bit_length of n >= 0."""
    bits = 0
    while n:
        bits, n = bits + 1, n >> 1
    return bits


@numba.njit(cache=True, inline="always")
def _bit(acc, k):
    return np.int64(acc[k >> 5] >> _u(k & 31)) & 1


@numba.njit(cache=True)
def frequencies(p):
    """Integer frequencies summing to 2^PRECISION, every symbol at least 1, proportional to the
    weights p (non-negative float64, not all 0) with integer-exact, order-fixed arithmetic."""
    f = np.empty(p.size, np.int64)
    frequencies_into(p.copy(), f, np.zeros(LIMBS, np.uint64))
    return f


@numba.njit(**NO_NRT)
def frequencies_into(p, f, acc):
    """`frequencies` of p into f, without allocating (p is overwritten; acc: `exact_sum_into`'s
    accumulator)."""
    n = p.size
    spare = (1 << PRECISION) - n
    if not 0 < n <= spare:
        raise ValueError("the alphabet does not fit the frequencies' precision")
    top = largest(p)[0]
    for i in range(n):
        p[i] = p[i] / top                              # no overflow or underflow below
    scale = spare / exact_sum_into(p, acc)             # the sum is >= 1 (it holds p = 1)
    for i in range(n):                                 # 0 <= p scale <= spare < 2^31: the
        f[i] = 1 + np.int32(p[i] * scale)              # truncation is the floor (vectorised)
    total = 0
    for i in range(n):
        total += f[i]
    f[largest(f)[1]] += (1 << PRECISION) - total       # rounding remainder to the mode


@numba.njit(cache=True)
def bucket_bits(n):
    """log2 of the bucket table size of an n-symbol model: bit length of n plus 4, at most 12
    (plus 2 scanned past more buckets for the rarer symbols: 1.03-1.05x slower per 32^3
    chunk at 1e-2 on the rough fields)."""
    return min(_MAX_BUCKET_BITS, bit_length(n) + 4)


@numba.njit(cache=True)
def model(freqs):
    """(cumulative frequencies (n+1), bucket table, bucket shift) of integer frequencies."""
    cum = np.empty(freqs.size + 1, np.uint32)          # compact: cache-resident
    bucket = np.empty(1 << bucket_bits(freqs.size), np.uint16)
    return cum, bucket, model_into(freqs, cum, bucket)


@numba.njit(**NO_NRT)
def model_into(freqs, cum, bucket):
    """`model` into cum (n+1) and bucket (2^bucket_bits(n)); returns the bucket shift."""
    cum[0] = 0
    for i in range(freqs.size):
        cum[i + 1] = cum[i] + freqs[i]
    shift = PRECISION - bucket_bits(freqs.size)
    round_up = (1 << shift) - 1                        # bucket b: the symbol at b << shift
    for s in range(freqs.size):
        bucket[(cum[s] + round_up) >> shift:(cum[s + 1] + round_up) >> shift] = s
    return shift


@numba.njit(cache=True)
def encode(symbols, contexts, cum, cum_at, bucket, bucket_at, shift):
    """The words of symbols (each < its context's alphabet size), coded so that `decode` reads
    them in this order; symbol i goes through state i % 2."""
    out = np.empty(symbols.size + 4, np.uint32)
    w = out.size
    xs = np.full(2, L, np.uint64)
    for i in range(symbols.size - 1, -1, -1):
        at = cum_at[contexts[i]] + symbols[i]
        start = np.uint64(cum[at])
        freq = np.uint64(cum[at + 1]) - start
        x = xs[i & 1]
        if x >= ((L >> np.uint64(PRECISION)) << np.uint64(32)) * freq:
            w -= 1
            out[w] = np.uint32(x & np.uint64(0xFFFFFFFF))
            x >>= np.uint64(32)
        xs[i & 1] = ((x // freq) << np.uint64(PRECISION)) + (x % freq) + start
    for k in (1, 0):                                     # the final states, state 0 read first
        out[w - 1] = np.uint32(xs[k] >> np.uint64(32))
        out[w - 2] = np.uint32(xs[k] & np.uint64(0xFFFFFFFF))
        w -= 2
    return out[w:]


@numba.njit(**NO_NRT)
def step(x, y, c, cum, cum_at, bucket, bucket_at, shift):
    """Decode one symbol of context c (which must have a model: cum_at[c] >= 0) from state x,
    y being the other state: (symbol, y, the new x), so that the states alternate.  The new x
    then needs a refill when below L:

        s, x, y = step(x, y, ...)
        y, pos = refill(y, words, pos)
    """
    return step_at(x, y, cum_at[c], bucket_at[c], shift[c], cum, bucket)


@numba.njit(cache=True, inline="always")
def refill(y, words, pos):
    """(y with the word at pos shifted in if y < L, the position after it): selected without a
    branch on y, whose refills come at no predictable rhythm (measured 1.12-1.24x faster per
    chunk on Gray-Scott than a branch).  Past the end of words it shifts in 0 and still
    advances, so that a caller finds pos > words.size (EXHAUSTED)."""
    last = words.size - 1
    word = _u(words[_u(pos)]) if pos <= last else _u(0)
    need = y < L
    return ((y << _u(32)) | word) if need else y, pos + np.int64(need)


@numba.njit(cache=True, inline="always")
def step_at(x, y, cum_at, bucket_at, shift, cum, bucket):
    """`step` with the context's model given by its offsets and shift."""
    base = _u(cum_at)
    slot = x & MASK
    s = _u(bucket[_u(bucket_at) + (slot >> _u(shift))])
    while cum[base + s + _u(1)] <= slot:
        s += _u(1)
    start = _u(cum[base + s])
    x = (_u(cum[base + s + _u(1)]) - start) * (x >> _u(PRECISION)) + slot - start
    return np.int64(s), y, x


@numba.njit(cache=True, inline="always")
def step_if(x, y, start, freq):
    """`step_at` for one likely symbol, whose slots are start ... start + freq - 1: when x's
    slot lies there, (True, y, the new x); else (False, x, y), for the full step."""
    slot = (x & MASK) - _u(start)                      # (wraps past freq when below start)
    if slot < _u(freq):
        return True, y, _u(freq) * (x >> _u(PRECISION)) + slot
    return False, x, y


@numba.njit(cache=True)
def decode(state, words, contexts, cmap, cum, cum_at, bucket, bucket_at, shift, out):
    """Decode one symbol per context (mapped by cmap) into out; returns a status.
    state: [the next symbol's coder state, the other state, position of the next word]."""
    x, y, pos = state[0], state[1], np.int64(state[2])
    for i in range(contexts.size):
        c = cmap[contexts[i]]
        if cum_at[c] < 0:
            return NO_TABLE
        out[i], x, y = step(x, y, c, cum, cum_at, bucket, bucket_at, shift)
        y, pos = refill(y, words, pos)
    if pos > words.size:
        return EXHAUSTED
    state[0], state[1], state[2] = x, y, np.uint64(pos)
    return OK


def start(words):
    """Decoder state at the start of a stream (see `decode`); None if it is too short."""
    return None if words.size < 4 else start_state(words)


@numba.njit(cache=True)
def start_state(words):
    """`start` of a stream of at least 4 words: the encoder wrote both final states first."""
    state = np.empty(3, np.uint64)
    state[0] = _u(words[0]) | _u(words[1]) << _u(32)
    state[1] = _u(words[2]) | _u(words[3]) << _u(32)
    state[2] = 4
    return state


@numba.njit(cache=True)
def finished(state, words):
    """Whether a stream was decoded completely: all words read and both states back at L."""
    return state[0] == L and state[1] == L and state[2] == words.size
