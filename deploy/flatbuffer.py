"""Reading TFLite/LCE flatbuffers: validation, operator inventory and tensor sizes.

The implementation lives in the library (:mod:`melius_larq._tflite`, shared with the CBD
export); this module keeps the deploy tools' names for it.
"""

from __future__ import annotations

from melius_larq._tflite import (
    FlatbufferError,
    load_flatbuffer,
    op_inventory,
    operators,
    read_model,
    tensor_nbytes,
)

__all__ = [
    "LCE_OPS",
    "FlatbufferError",
    "load_flatbuffer",
    "op_inventory",
    "operators",
    "read_model",
    "tensor_nbytes",
]

LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
