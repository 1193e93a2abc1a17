"""Context-modelled entropy coding of the quantization codes.

Each code is coded with the probability table of its context (known to the decoder before
the code: the level, the codes of the interpolation neighbours and the local gradient).
Two kinds of table, chosen per chunk: `Table`, nine bytes (log-scale probabilities of
q = 0, +1, -1, +2, -2, of the tails q >= 3 and q <= -3 and of the escape symbol, and the decay
of the geometric tails), and `OctaveTable` for wide distributions (tight bounds), one
probability per sign and octave of |q|.  Probabilities are rebuilt with integer-exact
arithmetic.  Format v3 codes the symbols with our compiled rANS coder (rans.py), one
symbol at a time with its context's table, in decoding order; formats v1 and v2 were coded
with constriction's ANS coder, still used to read them.
"""
import functools
import math
import struct

import constriction
import numba
import numpy as np

from . import rans
from .errors import CorruptChunkError
from .quantizer import QMAX

_ONE = 1 << 30
# floor(2^30 * 2^(-j/16)) for j = 0..15, by exact integer roots (no libm in the format)
_POW = np.array([math.isqrt(math.isqrt(math.isqrt(math.isqrt(1 << (960 - j))))) >> 30
                 for j in range(16)], np.int64)
_ABSENT = 255
_u = numba.uint64
MAX_CONTEXTS = 64                # coded contexts of a section: a 64-bit mask says which are used


@numba.njit(cache=True)
def _freq(code):
    """Integer frequency of a log-scale probability code (p = 2^(-code/16))."""
    return 0 if code == _ABSENT else _POW[code % 16] >> (code // 16)


def _code(p):
    return _ABSENT if p <= 0 else min(int(round(-16 * math.log2(p))), 254)


class Table:
    """Probabilities over the alphabet q = -K..K plus escape (symbol 2K+1)."""

    SIZE = 9

    def __init__(self, codes):
        self.codes = bytes(codes)

    @classmethod
    def fit(cls, histogram, escaped):
        """Fit to the counts of q = -K..K (histogram, escapes excluded) and of escapes."""
        K = len(histogram) // 2
        n = int(histogram.sum()) + escaped
        at = lambda v: int(histogram[K + v]) if abs(v) <= K else 0
        above, below = histogram[K + 3:], histogram[:max(K - 2, 0)]
        counts = [at(v) for v in (0, 1, -1, 2, -2)] + [int(above.sum()), int(below.sum()), escaped]
        tail = counts[5] + counts[6]
        excess = np.arange(len(above))                  # |q| - 3 of the tail values
        mean = float(excess @ above + excess @ below[::-1]) / tail if tail else 0.0
        theta = min(int(round(256 * mean / (1 + mean))), 255)
        return cls([_code(c / n) for c in counts] + [theta])

    def probabilities(self, K):
        p = np.empty(2 * K + 2)
        _table_probabilities(np.frombuffer(self.codes, np.uint8), K, p)
        return p


@numba.njit(**rans.NO_NRT)
def _table_probabilities(codes, K, p):
    """The weights of a `Table`'s alphabet into p (2K + 2 values)."""
    p[:] = 0.0
    p[K] = _freq(codes[0])
    if K >= 1:
        p[K + 1], p[K - 1] = _freq(codes[1]), _freq(codes[2])
    if K >= 2:
        p[K + 2], p[K - 2] = _freq(codes[3]), _freq(codes[4])
    fpt, fmt = float(_freq(codes[5])), float(_freq(codes[6]))
    theta = codes[8] / 256
    c = 1.0                                     # theta^k, sequential: exact everywhere
    for k in range(K - 2):                      # the geometric tails, |q| >= 3
        g = (1 - theta) * c
        p[K + 3 + k], p[K - 3 - k] = fpt * g, fmt * g
        c *= theta
    p[2 * K + 1] = _freq(codes[7])


class OctaveTable:
    """Probabilities of q = 0, of each octave 2^(b-1) <= |q| < 2^b per sign (uniform within
    the octave), and of the escape: 2 + 2 * bit_length(K) log-scale bytes."""

    def __init__(self, codes):
        self.codes = bytes(codes)

    @staticmethod
    def size(K):
        return 2 + 2 * K.bit_length()

    @classmethod
    def fit(cls, counts, escaped):
        """Fit to the counts of q = -K..K (escapes excluded) and of escapes."""
        K = len(counts) // 2
        n = int(counts.sum()) + escaped
        codes = [_code(counts[K] / n), _code(escaped / n)]
        for b in range(1, K.bit_length() + 1):
            lo, hi = 1 << (b - 1), min((1 << b) - 1, K)
            codes += [_code(counts[K + lo:K + hi + 1].sum() / n),
                      _code(counts[K - hi:K - lo + 1].sum() / n)]
        return cls(codes)

    def probabilities(self, K):
        p = np.empty(2 * K + 2)
        _octave_probabilities(np.frombuffer(self.codes, np.uint8), K, p)
        return p


@numba.njit(cache=True)
def _octave_probabilities(codes, K, p):
    """The weights of an `OctaveTable`'s alphabet into p (2K + 2 values)."""
    p[:] = 0.0
    p[K], p[2 * K + 1] = _freq(codes[0]), _freq(codes[1])
    b = 1
    while 1 << (b - 1) <= K:                    # b = 1 ... bit length of K
        lo, hi = 1 << (b - 1), min((1 << b) - 1, K)
        width = float(hi - lo + 1)
        p[K + lo:K + hi + 1] = _freq(codes[2 * b]) / width
        p[K - hi:K - lo + 1] = _freq(codes[2 * b + 1]) / width
        b += 1


@numba.njit(**rans.NO_NRT)
def _octave_frequencies(codes, K, f, acc, start, count, value):
    """`rans.frequencies_into` of `_octave_probabilities(codes, K)` into f (2K + 2 values), one
    computation per run of equal probabilities (each octave and sign, the zero, the escape)
    instead of per symbol: the same float64 operations on the same values, so the same
    frequencies (the wide tables of tight bounds hold thousands of symbols in a dozen runs).
    start, count, value: scratch for the runs (RUNS each).  False when no symbol has a
    probability."""
    n_runs = 2 * rans.bit_length(K) + 2
    value = value[:n_runs]
    B = n_runs // 2 - 1
    for r in range(n_runs):                     # in symbol order: q = -K ... K, escape
        if r == B:
            start[r], count[r], value[r] = K, 1, _freq(codes[0])
        elif r == n_runs - 1:
            start[r], count[r], value[r] = 2 * K + 1, 1, _freq(codes[1])
        else:
            b = B - r if r < B else r - B       # octave 2^(b-1) <= |q| < 2^b
            lo, hi = 1 << (b - 1), min((1 << b) - 1, K)
            count[r] = hi - lo + 1
            start[r] = K - hi if r < B else K + lo
            value[r] = _freq(codes[2 * b + (r < B)]) / float(hi - lo + 1)
    top = rans.largest(value)[0]
    if top <= 0:
        return False
    for r in range(n_runs):
        value[r] = value[r] / top
    scale = ((1 << rans.PRECISION) - (2 * K + 2)) / rans.exact_sum_runs(value, count[:n_runs], acc)
    total = largest = mode = 0
    for r in range(n_runs):
        fr = 1 + np.int32(value[r] * scale)     # as `rans.frequencies_into`
        f[start[r]:start[r] + count[r]] = fr
        total += fr * count[r]
        if fr > largest:                        # the first symbol of the largest: np.argmax
            largest, mode = fr, start[r]
    f[mode] += (1 << rans.PRECISION) - total
    return True


RUNS = 2 * QMAX.bit_length() + 2       # runs of equal probabilities of an OctaveTable, at most
TABLES = (Table, OctaveTable)          # the kind is bit 7 of a CODES section's first byte


def _table_size(kind, K):
    return Table.SIZE if kind is Table else OctaveTable.size(K)


class Encoder:
    """Collects the codes pass by pass with their contexts; `finish` codes them.

    `maps` are the context sets the encoder may use, each an array mapping every context to a
    coded context (e.g. identity, or merged contexts for small chunks where tables would cost
    more than they save); `finish` keeps the one giving the fewest bytes.  `gaps`: the codes
    are zero gaps and non-zero codes (format v5, `codec`), marked by bit 6 of the first byte.
    """

    def __init__(self, maps, choices=None, gaps=False):
        self.maps = [np.asarray(m, np.uint8) for m in maps]
        self.choices = range(len(maps)) if choices is None else choices
        self.gaps = GAPS if gaps else 0
        self.passes = []                    # (contexts, q, escaped) in decoding order

    @property
    def symbols(self):
        """How many symbols the decoder will take."""
        return sum(p[0].size for p in self.passes)

    def add(self, contexts, q, escaped):
        """Codes of one pass; the decoder will ask for them with the same contexts."""
        self.passes.append((contexts.ravel(), q.ravel(), escaped.ravel()))

    def finish(self):
        """The coded bytes with the context set whose estimated size is smallest."""
        codes = [np.concatenate([p[k] for p in self.passes]) for k in range(3)]
        fits = (fit for i in self.choices for fit in self._fits(i, *codes))
        return self._code(*min(fits, key=lambda fit: fit[-1]), *codes)

    def _fits(self, index, contexts, q, escaped):
        """For each table kind: a table fitted to each coded context of set `index`, with the
        size estimate (tables + ideal code length under them: within a few bytes of the ANS
        output)."""
        cmap = self.maps[index]
        count, escape, Ks, flat, at = _context_histograms(contexts, cmap, q, escaped, len(cmap))
        used = [int(c) for c in np.flatnonzero(count)]  # ascending: the order of the tables
        histograms = {c: flat[at[c]:at[c + 1]] for c in used}  # q = -K..K of each context
        escapes = {c: int(escape[c]) for c in used}
        K = {c: int(Ks[c]) for c in used}
        for kind in TABLES:
            tables = {c: kind.fit(h, escapes[c]) for c, h in histograms.items()}
            bits = 0.0
            for c, h in histograms.items():
                p = tables[c].probabilities(K[c])
                p = np.maximum(p / p.sum(), 2.0 ** -24)  # rans.frequencies: every f >= 1
                bits += float(h @ -np.log2(p[:-1])) - escapes[c] * np.log2(p[-1])
            head = struct.pack("<BQ", index | self.gaps | TABLES.index(kind) << 7,
                               sum(1 << c for c in K)) + \
                b"".join(_varint(K[c]) + tables[c].codes for c in K)
            yield cmap, K, kind, tables, head, len(head) + bits / 8

    def _code(self, cmap, K, kind, tables, head, _, contexts, q, escaped):
        buf = np.frombuffer(head, np.uint8)
        _, Ks, at = _section_tables(buf, kind)          # as the decoder will read them
        models = _rans_models(buf, kind, Ks, at)
        alphabet = np.maximum(Ks, 0)
        contexts = cmap[contexts]
        k = alphabet[contexts]
        symbols = np.where(escaped, 2 * k + 1, q + k).astype(np.int32)
        return head + rans.encode(symbols, contexts, *models).astype("<u4").tobytes()


@numba.njit(cache=True)
def _context_histograms(contexts, cmap, q, escaped, n):
    """Per coded context c = cmap[context]: how many codes it has (escapes included), how many
    are escapes, the largest |q| of the others (K), and their histograms over q = -K..K laid
    end to end (context c's at at[c] ... at[c + 1]; none for a context without codes)."""
    count, escape, K = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i in range(contexts.size):
        c = cmap[contexts[i]]
        count[c] += 1
        if escaped[i]:
            escape[c] += 1
        else:
            K[c] = max(K[c], abs(np.int64(q[i])))
    at = np.zeros(n + 1, np.int64)
    for c in range(n):
        at[c + 1] = at[c] + (2 * K[c] + 1 if count[c] else 0)
    flat = np.zeros(at[n], np.int64)
    for i in range(contexts.size):
        if not escaped[i]:
            c = cmap[contexts[i]]
            flat[at[c] + K[c] + q[i]] += 1
    return count, escape, K, flat, at


GAPS = 0x40                      # bit 6 of a section's first byte (format v5): zero gaps


def section(data, maps, legacy=False, gaps=False):
    """A coded section's bytes (uint8), table kind (Table or OctaveTable), context map (its
    context set, one of maps) and whether it codes zero gaps (only where `gaps` allows them);
    raises CorruptChunkError when it cannot hold its head."""
    try:
        index = data[0]
        cmap = np.asarray(maps[index & (0x3F if gaps else 0x7F)], np.uint8)
    except IndexError:
        raise CorruptChunkError(_NO_HEAD) from None
    buf = np.frombuffer(data, np.uint8)
    if not legacy and buf.size < _HEAD:
        raise CorruptChunkError(_NO_HEAD)
    return buf, TABLES[index >> 7], cmap, bool(index & GAPS) and gaps


OPENING, DECODING, ENDING = range(3)    # where a decode of a format v3 section stopped


def check(stage, status):
    """Raise CorruptChunkError for a failed step of decoding a format v3 section: opening it
    (`open_section`'s status), decoding (rans's status) or its end (status 1: the codes did
    not end where the section does)."""
    if not status:
        return
    if stage == OPENING:
        raise CorruptChunkError(_OPEN_ERRORS[status])
    if stage == ENDING:
        raise CorruptChunkError("entropy-coded section is damaged: its codes do not end where "
                                "the section does")
    raise CorruptChunkError(_DECODE_ERRORS.get(status, f"entropy decoding failed ({status})"))


_DECODE_ERRORS = {
    rans.NO_TABLE: "entropy-coded section lacks the table of a context it uses",
    rans.EXHAUSTED: "entropy-coded section is damaged: its codes run past its end",
    rans.VERBATIM_SHORT: "verbatim section is shorter than the codes say",
    rans.BAD_FLAG: "entropy-coded section holds an invalid run flag",
    rans.BAD_GAP: "entropy-coded section holds an invalid zero gap"}


class Decoder:
    """Reads the codes back pass by pass (`take`); `legacy`: a format v1/v2 section."""

    def __init__(self, data, maps, legacy=False):
        buf, kind, self.cmap, _ = section(data, maps, legacy)
        if not legacy:
            status, self.alphabet, self.words, state, *models = open_section(buf,
                                                                             kind is OctaveTable)
            check(OPENING, status)
            self.stream = _RansStream(self.words, tuple(models), state)
            return
        pos, Ks, at = _section_tables(buf, kind)
        self.alphabet = np.maximum(Ks, 0)
        words = data[pos:]
        if len(words) % 4:
            raise CorruptChunkError("entropy-coded section has a partial word")
        self.words = np.frombuffer(words, "<u4").astype(np.uint32)
        self.stream = _LegacyStream(self.words, kind, {
            int(c): (int(Ks[c]), data[at[c]:at[c] + _table_size(kind, int(Ks[c]))])
            for c in np.flatnonzero(Ks >= 0)})

    def take(self, contexts):
        """(q, escaped) for one pass, in the order `Encoder.add` got them."""
        shape, contexts = contexts.shape, contexts.ravel()
        q, escaped = np.empty(contexts.size, np.int32), np.empty(contexts.size, bool)
        self.stream.take(contexts, self.cmap, self.alphabet, q, escaped)
        return q.reshape(shape), escaped.reshape(shape)

    def finish(self):
        """Check that the codes ended where the section ends."""
        self.stream.finish()

    def compiled(self):
        """For decoders that entropy-decode inside their own compiled loop (format v3): the
        arguments of `rans.step` after x and pos, prefixed by the rANS state and followed by
        the context map and alphabet; pass their status to `check`."""
        return self.stream.state, self.words, self.cmap, self.alphabet, *self.stream.models

    def check(self, status):
        self.stream.check(status)


class _RansStream:
    def __init__(self, words, models, state):
        self.models = models                    # the tables' models, laid out as rans.py says
        self.words = words
        self.state = state                      # rans.start(words)

    def take(self, contexts, cmap, alphabet, q, escaped):
        symbols = np.empty(contexts.size, np.int32)
        self.check(rans.decode(self.state, self.words, contexts, cmap, *self.models,
                               symbols))
        _to_codes(symbols, contexts, cmap, alphabet, q, escaped)

    @staticmethod
    def check(status):
        check(DECODING, status)

    def finish(self):
        check(ENDING, not rans.finished(self.state, self.words))


@numba.njit(cache=True)
def _to_codes(symbols, contexts, cmap, alphabet, q, escaped):
    """Symbols of the alphabets q = -K..K (as q + K) plus escape (2K+1) as (q, escaped)."""
    for i in range(symbols.size):
        k = alphabet[cmap[contexts[i]]]
        escaped[i] = symbols[i] == 2 * k + 1
        q[i] = 0 if escaped[i] else symbols[i] - k


class _LegacyStream:
    """Formats v1 and v2: constriction's ANS coder, codes grouped by context within a pass."""

    def __init__(self, words, kind, tables):
        self.models = {c: _categorical(kind, codes, K) for c, (K, codes) in tables.items()}
        self.coder = constriction.stream.stack.AnsCoder(words)

    def take(self, contexts, cmap, alphabet, q, escaped):
        counts, used = _count_contexts(contexts, cmap)
        symbols = []
        for c, n in zip(used.tolist(), counts[used].tolist()):
            if c not in self.models:
                raise CorruptChunkError(f"entropy-coded section lacks the table of context {c}")
            try:
                symbols.append(self.coder.decode(self.models[c], n))
            except Exception as exc:  # constriction raises on exhausted or garbled data
                raise CorruptChunkError(f"entropy-coded section is damaged: {exc}") from None
        if symbols:
            _ungroup(contexts, cmap, counts,
                     symbols[0] if len(symbols) == 1 else np.concatenate(symbols), alphabet,
                     q, escaped)

    def finish(self):
        pass


def _varint(n):
    """Unsigned LEB128: 7 bits a byte, low bits first."""
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@numba.njit(cache=True)
def _count_contexts(contexts, cmap):
    """How many codes each coded context has (contexts mapped by the context set), and the
    coded contexts used, ascending."""
    counts = np.zeros(MAX_CONTEXTS, np.int64)
    for c in contexts:
        counts[cmap[c]] += 1
    return counts, np.flatnonzero(counts)


@numba.njit(cache=True)
def _ungroup(contexts, cmap, counts, symbols, alphabet, q, escaped):
    """Put the symbols, decoded context by context in ascending order, back in code order;
    symbol 2K+1 is the escape, the others are q + K."""
    at = np.zeros(counts.size, np.int64)
    for c in range(1, counts.size):
        at[c] = at[c - 1] + counts[c - 1]
    for i in range(contexts.size):
        c = cmap[contexts[i]]
        s = symbols[at[c]]
        at[c] += 1
        escaped[i] = s == 2 * alphabet[c] + 1
        q[i] = 0 if escaped[i] else s - alphabet[c]


_HEAD = struct.calcsize("<BQ")           # a section starts: context set and kind, mask
_NO_HEAD = "entropy-coded section truncated or names an unknown context set"
_TRUNCATED, _NO_PROBABILITY = 1, 2


@numba.njit(cache=True)
def _parse_tables(buf, pos, octave, mask):
    """Walk the tables of the contexts in mask from buf[pos]: (status, end, each context's
    alphabet K (-1: no table), where its table's bytes start)."""
    Ks, at = np.full(MAX_CONTEXTS, -1, np.int64), np.zeros(MAX_CONTEXTS, np.int64)
    for c in range(MAX_CONTEXTS):
        if not mask >> numba.uint64(c) & numba.uint64(1):
            continue
        K = shift = 0
        while True:                             # unsigned LEB128
            if pos >= buf.size or shift > 28:
                return _TRUNCATED, pos, Ks, at
            byte = np.int64(buf[pos])
            K |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if not byte & 0x80:
                break
        size = 9 if not octave else 2 + 2 * rans.bit_length(K)
        if K > QMAX or pos + size > buf.size:
            return _TRUNCATED, pos, Ks, at
        Ks[c], at[c], pos = K, pos, pos + size
    return 0, pos, Ks, at


@numba.njit(cache=True)
def _build_models(buf, octave, Ks, at):
    """(status, the rANS models of the tables: cum, cum_at, bucket, bucket_at, shift as laid
    out in rans.py)."""
    cum_at, bucket_at = np.full(MAX_CONTEXTS, -1, np.int64), np.zeros(MAX_CONTEXTS, np.int64)
    shift = np.zeros(MAX_CONTEXTS, np.int64)
    n_cum = n_bucket = 0
    for c in range(MAX_CONTEXTS):
        if Ks[c] >= 0:
            n_cum += 2 * Ks[c] + 3
            n_bucket += 1 << rans.bucket_bits(2 * Ks[c] + 2)
    cum, bucket = np.zeros(max(n_cum, 1), np.uint32), np.zeros(max(n_bucket, 1), np.uint16)
    n = 2 * Ks.max() + 2                                # scratch
    status = _models_into(buf, octave, Ks, at, cum, cum_at, bucket, bucket_at, shift,
                          np.empty(n), np.empty(n, np.int64), np.zeros(rans.LIMBS, np.uint64),
                          np.empty(RUNS, np.int64), np.empty(RUNS, np.int64), np.empty(RUNS))
    return status, cum, cum_at, bucket, bucket_at, shift


@numba.njit(**rans.NO_NRT)
def _models_into(buf, octave, Ks, at, cum, cum_at, bucket, bucket_at, shift, p, f, acc, start,
                 count, value):
    """`_build_models` into its arrays, given scratch (p, f: the widest alphabet; acc: LIMBS
    zeros; start, count, value: RUNS); returns the status."""
    n_cum = n_bucket = 0
    for c in range(MAX_CONTEXTS):
        K = Ks[c]
        if K < 0:
            continue
        n, n_b = 2 * K + 2, 1 << rans.bucket_bits(2 * K + 2)
        if octave:
            if not _octave_frequencies(buf[at[c]:], K, f[:n], acc, start, count, value):
                return _NO_PROBABILITY
        else:
            _table_probabilities(buf[at[c]:], K, p[:n])
            if rans.largest(p[:n])[0] <= 0:
                return _NO_PROBABILITY
            rans.frequencies_into(p[:n], f[:n], acc)
        shift[c] = rans.model_into(f[:n], cum[n_cum:n_cum + n + 1],
                                   bucket[n_bucket:n_bucket + n_b])
        cum_at[c], bucket_at[c] = n_cum, n_bucket
        n_cum, n_bucket = n_cum + n + 1, n_bucket + n_b
    return 0


def _section_tables(buf, kind):
    """(end of the tables, each context's K (-1: no table), where its table starts) of a
    section whose head (context set and kind, 64-bit mask of the contexts coded) is in buf."""
    if buf.size < _HEAD:
        raise CorruptChunkError(_NO_HEAD)
    mask = np.uint64(struct.unpack_from("<Q", buf, 1)[0])
    status, pos, Ks, at = _parse_tables(buf, _HEAD, kind is OctaveTable, mask)
    if status:
        raise CorruptChunkError("entropy-coded section truncated in its tables")
    return pos, Ks, at


def _rans_models(buf, kind, Ks, at):
    """The rANS models (laid out as rans.py says) of a section's tables, built in one compiled call
    (each chunk has its own tables: building them is part of every chunk's decode)."""
    status, *models = _build_models(buf, kind is OctaveTable, Ks, at)
    if status:
        raise CorruptChunkError("entropy-coded section holds a table with no probability")
    return tuple(models)


_PARTIAL_WORD, _SHORT_STREAM = 3, 4
_OPEN_ERRORS = {_TRUNCATED: "entropy-coded section truncated in its tables",
                _NO_PROBABILITY: "entropy-coded section holds a table with no probability",
                _PARTIAL_WORD: "entropy-coded section has a partial word",
                _SHORT_STREAM: "entropy-coded section is truncated"}


@numba.njit(cache=True)
def open_section(buf, octave):
    """A format v3 section (its bytes in buf, at least _HEAD of them) ready to decode, in one
    compiled call (a chunk's share of the decode that does not grow with its size):
    (status, each context's alphabet K (0: no table), the code words, the rANS start state,
    and the models of `_build_models`)."""
    mask = _u(0)
    for i in range(8):                          # after the context-set byte: u64, little-endian
        mask |= _u(buf[1 + i]) << _u(8 * i)
    status, pos, Ks, at = _parse_tables(buf, _HEAD, octave, mask)
    if status:
        return _failed(status)
    status, cum, cum_at, bucket, bucket_at, shift = _build_models(buf, octave, Ks, at)
    if status or (buf.size - pos) % 4 or buf.size - pos < 16:
        return _failed(status if status else _PARTIAL_WORD if (buf.size - pos) % 4 else _SHORT_STREAM)
    words = np.empty((buf.size - pos) // 4, np.uint32)
    for i in range(words.size):                 # little-endian u32 on any machine
        b = pos + 4 * i
        words[i] = (np.uint32(buf[b]) | np.uint32(buf[b + 1]) << np.uint32(8)
                    | np.uint32(buf[b + 2]) << np.uint32(16) | np.uint32(buf[b + 3]) << np.uint32(24))
    return (status, np.maximum(Ks, 0), words, rans.start_state(words), cum, cum_at, bucket,
            bucket_at, shift)


@numba.njit(cache=True)
def _failed(status):
    """`open_section`'s answer for a damaged section: the status and empty arrays of its types."""
    none = np.zeros(0, np.int64)
    return (status, none, np.zeros(0, np.uint32), np.zeros(3, np.uint64), np.zeros(0, np.uint32),
            none, np.zeros(0, np.uint16), none, none)


@functools.lru_cache(maxsize=4096)
def _categorical(kind, codes, K):
    """constriction's model of a table (formats v1 and v2)."""
    p = kind(codes).probabilities(K)
    if not p.any():
        raise CorruptChunkError("entropy-coded section holds a table with no probability")
    return constriction.stream.model.Categorical(p, perfect=False)
