"""A damaged chunk raises CorruptChunkError saying what is wrong; it never decodes silently."""
import functools

import numpy as np
import pytest

import pyneuralfilter as nf
from pyneuralfilter import container

A = np.sin(np.linspace(0, 20, 4096)).reshape(16, 16, 16).astype(np.float32)
DATA = nf.encode(A, rel=1e-3)


def test_truncated():
    with pytest.raises(nf.CorruptChunkError, match="truncated|checksum"):
        nf.decode(DATA[:-7])
    with pytest.raises(nf.CorruptChunkError, match="truncated"):
        nf.decode(DATA[:5])


@pytest.mark.parametrize("pos", [10, 40, 90, -30, -5])
def test_flipped_byte(pos):
    bad = bytearray(DATA)
    bad[pos] ^= 0x40
    with pytest.raises(nf.CorruptChunkError, match="checksum|magic"):
        nf.decode(bytes(bad))


def test_not_a_chunk():
    with pytest.raises(nf.CorruptChunkError, match="not a neuralfilter chunk"):
        nf.decode(b"HDF5 is not us" * 4)


def test_newer_format_version():
    chunk = container.unpack(DATA)
    body = bytearray(chunk.pack()[:-4])
    body[4] = container.FORMAT_VERSION + 1
    import struct, zlib
    with pytest.raises(nf.CorruptChunkError, match="newer than this reader"):
        nf.decode(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))


def test_inconsistent_sections_with_valid_checksum():
    chunk = container.unpack(DATA)
    chunk.sections[2] = b"\0" * 4          # a verbatim value the codes never asked for
    with pytest.raises(nf.CorruptChunkError, match="verbatim"):
        nf.decode(chunk.pack())


def test_missing_model_names_hash():
    chunk = container.unpack(nf.encode(np.random.default_rng(0).standard_normal((10, 10, 10)),
                                       rel=1e-2, predictor="swae"))
    chunk.model_hash = bytes.fromhex("ab" * 32)
    with pytest.raises(nf.ModelNotFoundError, match="abababab"):
        nf.decode(chunk.pack())


def test_decoder_that_computes_differently_fails_loudly():
    chunk = container.unpack(DATA)
    assert 8 in chunk.sections                  # DIGEST of the values the encoder verified
    chunk.sections[8] = bytes(4)                # as if this reader's arithmetic differed
    with pytest.raises(nf.CorruptChunkError, match="digest mismatch"):
        nf.decode(chunk.pack())


def test_failed_self_check_stores_losslessly(monkeypatch):
    from pyneuralfilter import codec
    real = codec._decode_values
    monkeypatch.setattr(codec, "_decode_values",
                        lambda chunk, out: real(chunk, out).__iadd__(1))   # a broken decoder
    with pytest.warns(RuntimeWarning, match="stored losslessly"):
        data = nf.encode(A, rel=1e-3)
    monkeypatch.undo()
    assert nf.chunk_info(data)["mode"] in ("raw", "zstd")
    assert np.array_equal(nf.decode(data), A)


def test_inconsistent_swae_sections_with_valid_checksum():
    a = np.random.default_rng(1).standard_normal((10, 10, 10)).cumsum(0)
    chunk = container.unpack(nf.encode(a, rel=1e-2, predictor="swae"))
    short = container.unpack(chunk.pack())
    short.sections[5] = b""                                   # block map missing its bits
    with pytest.raises(nf.CorruptChunkError, match="block map"):
        nf.decode(short.pack())
    wild = container.unpack(chunk.pack())
    wild.sections[6] = bytes([128]) + wild.sections[6][1:]    # latent -128 is outside the grid
    with pytest.raises(nf.CorruptChunkError, match="latents outside"):
        nf.decode(wild.pack())


@pytest.mark.parametrize("tag, name", [(9, "tap"), (10, "feedback")])
def test_short_pass_parameter_section_with_valid_checksum(tag, name):
    from pyneuralfilter import datagen
    data = nf.encode(datagen.field("grayscott_u", 24, seed=1, steps=200), rel=1e-3,
                     predictor="interp")
    chunk = container.unpack(data)
    assert tag in chunk.sections                            # the path under test
    chunk.sections[tag] = chunk.sections[tag][:3]
    with pytest.raises(nf.CorruptChunkError, match=f"{name} section"):
        nf.decode(chunk.pack())


@pytest.mark.parametrize("eb", [0.0, -1.0, float("nan"), float("inf")])
def test_impossible_bound_in_a_coded_chunk(eb):
    chunk = container.unpack(DATA)
    chunk.eb = eb                                   # repacked: the checksum is valid
    with pytest.raises(nf.CorruptChunkError, match="error bound"):
        nf.decode(chunk.pack())


@pytest.mark.parametrize("damage", ["cut", "extend", "flip"])
def test_damaged_code_stream_with_valid_checksum(damage):
    chunk = container.unpack(DATA)
    codes = bytearray(chunk.sections[1])
    if damage == "cut":
        codes = codes[:-8]
    elif damage == "extend":
        codes += b"\1\2\3\4"
    else:
        codes[-9] ^= 0x10
    chunk.sections[1] = bytes(codes)                        # repacked: the checksum is valid
    with pytest.raises(nf.CorruptChunkError, match="entropy-coded|verbatim|digest"):
        nf.decode(chunk.pack())


@pytest.mark.parametrize("damage, message", [
    (lambda c: c[:5], "truncated or names an unknown context set"),
    (lambda c: c[:12], "truncated in its tables"),
    (lambda c: c + b"\1", "partial word"),
    (lambda c: c + b"\0\0\0\0", "do not end where the section does")])
def test_code_section_damage_is_named(damage, message):
    """A chunk decoded in one compiled call (interpolation alone) says which step failed:
    opening its code section, or the end of the codes."""
    from pyneuralfilter import datagen
    from pyneuralfilter.codec import BLOCKMAP, CODES
    chunk = container.unpack(nf.encode(datagen.field("bssn_chi", 24, seed=1), rel=1e-3,
                                       predictor="interp"))
    assert BLOCKMAP not in chunk.sections                   # no SWAE blocks: the one-call path
    chunk.sections[CODES] = damage(chunk.sections[CODES])
    with pytest.raises(nf.CorruptChunkError, match=message):
        nf.decode(chunk.pack())


def test_inconsistent_lorenzo_sections_with_valid_checksum():
    from pyneuralfilter import codec, datagen
    x = datagen.field("kolmo_u", 16, seed=1)
    chunk = container.unpack(nf.encode(x, rel=1e-4))
    assert codec.LORENZO in chunk.sections                  # the path under test
    chunk.sections[codec.VERBATIM] = chunk.sections.get(codec.VERBATIM, b"") + b"\0" * 4
    with pytest.raises(nf.CorruptChunkError, match="verbatim"):
        nf.decode(chunk.pack())
    chunk.sections[codec.LORENZO] = chunk.sections[codec.LORENZO][:-12]
    with pytest.raises(nf.CorruptChunkError, match="entropy-coded"):
        nf.decode(chunk.pack())


def test_mutated_sections_with_valid_checksum_never_decode_to_other_values():
    """Flipped, cut, extended or overwritten bytes in any section (checksum recomputed, as a
    writer bug or a crafted file would have it): a clear error or, where the change does not
    matter (padding bits), the very same values; never a crash, never other values."""
    from pyneuralfilter import datagen
    rng = np.random.default_rng(5)
    sources = [nf.encode(datagen.field("grayscott_u", 24, seed=1, steps=200), rel=1e-3,
                         predictor="interp"),
               nf.encode(datagen.field("kolmo_u", 16, seed=1), rel=1e-4),
               nf.encode(datagen.field("bssn_chi", 15, seed=1), rel=1e-3, predictor="swae"),
               _gap_chunk()]
    reference = [nf.decode(data) for data in sources]
    for trial in range(400):
        chunk = container.unpack(sources[trial % len(sources)])
        tag = list(chunk.sections)[rng.integers(len(chunk.sections))]
        data = bytearray(chunk.sections[tag])
        how = rng.integers(3)
        if how == 0 and data:
            data[rng.integers(len(data))] ^= 1 << rng.integers(8)
        elif how == 1:
            data = data[:rng.integers(len(data) + 1)]
        else:
            data += bytes(rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8))
        chunk.sections[tag] = bytes(data)
        try:
            out = nf.decode(chunk.pack())
        except nf.NeuralFilterError:
            continue
        assert np.array_equal(out, reference[trial % len(sources)], equal_nan=True), (trial, tag)


def test_checksums_are_zlib_crc32():
    """The container's and DIGEST's CRC-32 (computed with ISA-L when present) are zlib's."""
    import zlib
    from pyneuralfilter import codec
    data = nf.encode(A, rel=1e-3)
    assert struct_crc(data) == zlib.crc32(data[:-4])
    decoded = nf.decode(data)
    assert codec._digest(decoded) == zlib.crc32(decoded.astype("<f4").tobytes()).to_bytes(4, "little")
    for n in (0, 1, 7, 64, 4099):
        blob = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
        assert container.crc32(blob) == zlib.crc32(blob)


def struct_crc(data):
    import struct
    return struct.unpack("<I", data[-4:])[0]


def _damaged_codes(damage):
    """The CODES section of DATA damaged in one part that the decoder reads before any code."""
    from pyneuralfilter import entropy
    codes = container.unpack(DATA).sections[1]
    buf = np.frombuffer(codes, np.uint8)
    kind = entropy.TABLES[codes[0] >> 7]
    end, Ks, at = entropy._section_tables(buf, kind)
    if damage == "head":
        return codes[:5]
    if damage == "tables":
        return codes[:end - 1]
    if damage == "partial word":
        return codes + b"\0"
    if damage == "short stream":
        return codes[:end + 8]
    c = int(np.flatnonzero(Ks >= 0)[0])                    # "no probability": every weight 0
    size = entropy._table_size(kind, int(Ks[c]))
    return codes[:at[c]] + bytes([255]) * size + codes[at[c] + size:]


@pytest.mark.parametrize("damage, message", [
    ("head", "truncated or names an unknown context set"),
    ("tables", "truncated in its tables"),
    ("partial word", "partial word"),
    ("short stream", "entropy-coded section is truncated"),
    ("no probability", "table with no probability")])
def test_damaged_section_head_with_valid_checksum_says_which_part(damage, message):
    chunk = container.unpack(DATA)
    chunk.sections[1] = _damaged_codes(damage)               # repacked: the checksum is valid
    with pytest.raises(nf.CorruptChunkError, match=message):
        nf.decode(chunk.pack())


def test_context_set_newer_than_the_chunks_version():
    """Context set 3 came with format version 4: a version 3 chunk naming it is damaged."""
    import struct, zlib
    from pyneuralfilter import codec, datagen
    chi = datagen.field("bssn_chi", 24, seed=1)
    data = nf.encode(chi, rel=1e-2, predictor="interp")              # (in run flags, not gaps)
    assert container.unpack(data).sections[codec.CODES][0] & 0x7F == 3   # the set under test
    assert nf.decode(data) is not None
    body = bytearray(data[:-4])
    body[4] = 3
    with pytest.raises(nf.CorruptChunkError, match="unknown context set"):
        nf.decode(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))


@functools.lru_cache(maxsize=1)
def _gap_chunk():
    """A chunk the encoder codes in zero gaps (sparse codes spread over every run of 64)."""
    from pyneuralfilter import datagen
    return nf.encode(datagen.field("lognormal_rho", 48, seed=1), rel=3e-2)


def test_zero_gaps_in_a_chunk_older_than_version_5():
    """Zero gaps (bit 6 of the code section's first byte) came with format version 5: a
    version 4 chunk with that bit set is damaged, not read as gaps."""
    import struct, zlib
    from pyneuralfilter import codec, entropy
    data = _gap_chunk()
    assert container.unpack(data).sections[codec.CODES][0] & entropy.GAPS   # the path under test
    body = bytearray(data[:-4])
    body[4] = 4
    with pytest.raises(nf.CorruptChunkError, match="unknown context set"):
        nf.decode(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))


def test_damaged_zero_gaps_are_named():
    """Gap symbols that run past their pass, or codes cut short, fail with a clear error."""
    from pyneuralfilter import codec, entropy
    chunk = container.unpack(_gap_chunk())
    codes = chunk.sections[codec.CODES]
    assert codes[0] & entropy.GAPS
    for damaged in (codes[:-8], codes[:-4] + bytes(4), codes[:40] + bytes(len(codes) - 40)):
        chunk.sections[codec.CODES] = damaged
        with pytest.raises(nf.CorruptChunkError, match="entropy-coded|verbatim|digest"):
            nf.decode(chunk.pack())


def test_chunk_its_reader_refuses_is_stored_losslessly(monkeypatch):
    """Should the encoder ever write a chunk its own reader refuses (an error, not other
    values), the write still succeeds: losslessly, with the self-check's warning."""
    from pyneuralfilter import codec
    def refuse(chunk, out):
        raise nf.CorruptChunkError("refused")
    monkeypatch.setattr(codec, "_decode_values", refuse)
    with pytest.warns(RuntimeWarning, match="stored losslessly"):
        data = nf.encode(A, rel=1e-3)
    monkeypatch.undo()
    assert nf.chunk_info(data)["mode"] in ("raw", "zstd")
    assert np.array_equal(nf.decode(data), A)
