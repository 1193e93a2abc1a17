"""The self-describing chunk format (see docs/format.md).  Fixed little-endian layout:

    header   magic "NFC1", format version, mode, dtype, rank, shape, bound
    sections count, then per section: tag (u8) and length (u32); tag 0 is the model hash
    payload  the sections' bytes, in order
    trailer  CRC-32 of everything before it
"""
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

try:                    # ISA-L's CRC-32: the same values as zlib's, ~13x faster (measured)
    from isal.isal_zlib import crc32
except ImportError:     # pragma: no cover - isal is a dependency; zlib gives identical results
    crc32 = zlib.crc32

from .errors import CorruptChunkError, UnsupportedDataError

MAGIC = b"NFC1"
FORMAT_VERSION = 5
MODE_RAW, MODE_ZSTD, MODE_CODED = 0, 1, 2          # how the payload holds the values
BOUND_ABS, BOUND_REL = 0, 1
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8")}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
HASH_BYTES = 32

_FIXED = struct.Struct("<4sBBBB")                    # magic, version, mode, dtype, rank
_BOUND = struct.Struct("<Bdd")                       # bound mode, bound as given, absolute bound
_SECTION = struct.Struct("<BI")
MODEL = 0                                            # section: SHA-256 of the model used


@dataclass
class Chunk:
    """One chunk, decoded from or about to be encoded into the container."""
    mode: int
    dtype: np.dtype
    shape: tuple
    bound_mode: int
    bound: float
    eb: float
    model_hash: bytes = bytes(HASH_BYTES)
    sections: dict = field(default_factory=dict)     # tag -> bytes
    version: int = FORMAT_VERSION                    # as read; `pack` writes FORMAT_VERSION

    def pack(self) -> bytes:
        try:
            dcode = DTYPE_CODES[np.dtype(self.dtype).newbyteorder("<")]
        except KeyError:
            raise UnsupportedDataError(f"dtype {self.dtype} cannot be stored") from None
        parts = [_FIXED.pack(MAGIC, FORMAT_VERSION, self.mode, dcode, len(self.shape)),
                 struct.pack(f"<{len(self.shape)}Q", *self.shape),
                 _BOUND.pack(self.bound_mode, self.bound, self.eb)]
        sections = dict(self.sections)
        if any(self.model_hash):
            sections = {MODEL: bytes(self.model_hash), **sections}
        parts.append(struct.pack("<B", len(sections)))
        parts += [_SECTION.pack(tag, len(data)) for tag, data in sections.items()]
        parts += list(sections.values())
        body = b"".join(parts)
        return body + struct.pack("<I", crc32(body))

    @property
    def info(self) -> dict:
        return {"format_version": self.version, "mode": ("raw", "zstd", "coded")[self.mode],
                "dtype": str(np.dtype(self.dtype)), "shape": self.shape,
                "bound": ("abs", "rel")[self.bound_mode], "bound_value": self.bound,
                "abs_bound": self.eb, "model": self.model_hash.hex() if any(self.model_hash) else None,
                "sections": {tag: len(data) for tag, data in self.sections.items()}}


def unpack(data) -> Chunk:
    """Parse and verify a chunk; any damage raises CorruptChunkError saying what is wrong."""
    data = bytes(data)
    if len(data) < _FIXED.size + 4:
        raise CorruptChunkError(f"chunk truncated: {len(data)} bytes is shorter than any header")
    magic, version, mode, dcode, rank = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise CorruptChunkError(f"not a neuralfilter chunk (magic {magic!r}, expected {MAGIC!r})")
    if version > FORMAT_VERSION:
        raise CorruptChunkError(f"chunk format version {version} is newer than this reader "
                                f"({FORMAT_VERSION}); upgrade neuralfilter")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc32(data[:-4]) != crc:
        raise CorruptChunkError("chunk checksum mismatch: the stored bytes are damaged or truncated")
    if mode not in (MODE_RAW, MODE_ZSTD, MODE_CODED) or dcode not in DTYPES or not 1 <= rank <= 4:
        raise CorruptChunkError(f"invalid chunk header (mode {mode}, dtype code {dcode}, rank {rank})")
    try:
        pos = _FIXED.size
        shape = struct.unpack_from(f"<{rank}Q", data, pos)
        pos += 8 * rank
        bound_mode, bound, eb = _BOUND.unpack_from(data, pos)
        pos += _BOUND.size
        (count,) = struct.unpack_from("<B", data, pos)
        pos += 1
        heads = [_SECTION.unpack_from(data, pos + i * _SECTION.size) for i in range(count)]
        pos += count * _SECTION.size
    except struct.error as exc:
        raise CorruptChunkError(f"chunk header truncated: {exc}") from None
    sections = {}
    for tag, length in heads:
        if pos + length > len(data) - 4:
            raise CorruptChunkError(f"section {tag} runs past the end of the chunk")
        sections[tag] = data[pos:pos + length]
        pos += length
    if pos != len(data) - 4:
        raise CorruptChunkError(f"{len(data) - 4 - pos} unexplained bytes after the last section")
    model_hash = sections.pop(MODEL, bytes(HASH_BYTES))
    if len(model_hash) != HASH_BYTES:
        raise CorruptChunkError(f"model hash section holds {len(model_hash)} bytes, not {HASH_BYTES}")
    return Chunk(mode, DTYPES[dcode], tuple(shape), bound_mode, bound, eb, model_hash, sections,
                 version)
