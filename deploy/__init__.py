"""deploy: LCE conversion, conversion reports, Keras/LCE verification and benchmarks.

Importing this package does not import Larq Compute Engine; the functions that need it import
it when called and raise an ImportError that says how to install it.
"""

from melius_larq.deploy.convert import TARGETS, convert_model, write_atomic
from melius_larq.deploy.flatbuffer import FlatbufferError, load_flatbuffer, op_inventory

__all__ = [
    "TARGETS",
    "FlatbufferError",
    "convert_model",
    "load_flatbuffer",
    "op_inventory",
    "write_atomic",
]
