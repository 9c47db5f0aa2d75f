"""Reading TFLite/LCE flatbuffers: validation, operator inventory and tensor sizes.

The implementation lives in the library (:mod:`melius_larq._tflite`, shared with the CBD
export); this module keeps the deploy tools' names for it.
"""

from __future__ import annotations

import os

from melius_larq._tflite import (
    FlatbufferError,
    load_flatbuffer,
    op_inventory,
    operators,
    read_model,
    schema,
    tensor_nbytes,
)

__all__ = [
    "LCE_OPS",
    "FlatbufferError",
    "input_shape",
    "load_flatbuffer",
    "op_inventory",
    "operators",
    "read_model",
    "tensor_nbytes",
]

LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")


def input_shape(source: bytes | str | os.PathLike) -> tuple[int, ...]:
    """The shape of one sample of a flatbuffer's first input (without the batch dimension).

    E.g. ``(32, 32, 3)`` for an image model converted at 32x32 RGB.

    Raises:
        FlatbufferError: when it is not a valid TFLite flatbuffer or its main graph has no input.
    """
    graph = schema().Model.GetRootAsModel(load_flatbuffer(source), 0).Subgraphs(0)
    if graph.InputsLength() == 0:
        raise FlatbufferError("The flatbuffer's main graph has no input.")
    tensor = graph.Tensors(graph.Inputs(0))
    return tuple(int(tensor.Shape(i)) for i in range(1, tensor.ShapeLength()))
