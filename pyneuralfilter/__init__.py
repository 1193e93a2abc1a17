"""neuralfilter: error-bounded neural compression of scientific 3D data.

    import pyneuralfilter
    data = pyneuralfilter.encode(array, rel=1e-3)
    array = pyneuralfilter.decode(data)

    h5file.create_dataset("u", data=u, chunks=(64, 64, 64), **pyneuralfilter.Neural(rel=1e-3))
"""
from .codec import chunk_info, decode, encode
from .errors import (CorruptChunkError, ModelNotFoundError, NeuralFilterError, OutputMismatchError,
                     UnsupportedDataError)
from .filter import NEURAL_FILTER, PLUGIN_PATH, Neural, register

register()      # with h5py: compression=NEURAL_FILTER works; a no-op inside C hosts

__version__ = "0.1.0"
__all__ = ["encode", "decode", "chunk_info", "NEURAL_FILTER", "Neural", "PLUGIN_PATH", "register",
           "NeuralFilterError", "CorruptChunkError", "ModelNotFoundError", "UnsupportedDataError",
           "OutputMismatchError"]
