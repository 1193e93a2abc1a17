"""Exceptions raised by neuralfilter.  Every message says what went wrong and why."""


class NeuralFilterError(Exception):
    """Base class of every neuralfilter error."""


class CorruptChunkError(NeuralFilterError, ValueError):
    """A compressed chunk is truncated, fails its checksum or is not a neuralfilter chunk."""


class OutputMismatchError(NeuralFilterError, ValueError):
    """The array given to decode into does not fit the chunk (shape, dtype, layout)."""


class ModelNotFoundError(NeuralFilterError, LookupError):
    """The model a chunk or a call names cannot be found in any model location."""


class UnsupportedDataError(NeuralFilterError, TypeError):
    """The data cannot be compressed (dtype, rank or bound not supported)."""
