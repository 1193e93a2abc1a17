"""neuralfilter: error-bounded neural compression of scientific 3D data.

    import pyneuralfilter
    data = pyneuralfilter.encode(array, rel=1e-3)
    array = pyneuralfilter.decode(data)
"""
from .codec import chunk_info, decode, encode
from .errors import CorruptChunkError, ModelNotFoundError, NeuralFilterError, UnsupportedDataError

__version__ = "0.1.0"
__all__ = ["encode", "decode", "chunk_info", "NeuralFilterError", "CorruptChunkError",
           "ModelNotFoundError", "UnsupportedDataError"]
