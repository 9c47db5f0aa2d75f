"""int8 non-binary layers for LCE flatbuffers, calibrated on real data.

LCE 0.16 produces int8 kernels only from quantization-aware graphs: its
``experimental_default_int8_range`` leaves most layers float (specs/lce.md section 1). This
module turns a trained float Keras model into such a graph after training:

1. **Preparation** (:func:`prepare_for_int8`): a float conv whose only consumer is a
   BatchNormalization absorbs it (so the int8 kernel is quantized *after* folding, as TFLite
   needs); other BatchNormalizations become 1x1 depthwise convs; non-linear activations are
   split from their conv/dense layer.
2. **Weight fake-quantization**: float conv/dense kernels are fake-quantized per output
   channel, symmetric, 8 bit, ``narrow_range`` (TFLite's int8 weight scheme).
3. **Activation fake-quantization**: every tensor (the input and each layer's output) gets a
   ``FakeQuantWithMinMaxVars`` with the min/max observed on calibration data.

Binary convolutions are untouched: LCE still bit-packs their weights, and with int8 tensors
around them they read int8 inputs and write int8 outputs.
"""

from __future__ import annotations

import os

import larq as lq
import numpy as np

from melius_larq._compat import tf

__all__ = [
    "calibrate_ranges",
    "convert_int8",
    "convert_int8_weights",
    "fake_quant_model",
    "int8_flatbuffer_summary",
    "load_calibration",
    "prepare_for_int8",
    "quantize_per_channel",
    "store_weights_int8",
    "share_scales",
]


class FakeQuant(tf.keras.layers.Layer):
    """Fake-quantizes activations to int8 with a fixed, calibrated range."""

    def __init__(self, lo: float, hi: float, **kwargs):
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_vars(inputs, self.lo, self.hi, num_bits=8)


class FakeQuantConv2D(tf.keras.layers.Conv2D):
    """Conv2D whose kernel is fake-quantized per output channel (symmetric int8)."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, _fake_quant_kernel(kernel))


class FakeQuantDepthwiseConv2D(tf.keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D whose kernel is fake-quantized per tensor (symmetric int8)."""

    def call(self, inputs):
        bound = tf.maximum(tf.reduce_max(tf.abs(self.depthwise_kernel)), 1e-8)
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            self.depthwise_kernel, -bound, bound, num_bits=8, narrow_range=True
        )
        y = tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1), self.padding.upper())
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)


class FakeQuantDense(tf.keras.layers.Dense):
    """Dense whose kernel is fake-quantized per tensor (symmetric int8)."""

    def call(self, inputs):
        # per-tensor: the converter transposes FC kernels and rejects a per-channel axis
        bound = tf.maximum(tf.reduce_max(tf.abs(self.kernel)), 1e-8)
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            self.kernel, -bound, bound, num_bits=8, narrow_range=True
        )
        y = tf.matmul(inputs, kernel)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)


def _fake_quant_kernel(kernel):
    axes = list(range(len(kernel.shape) - 1))
    bound = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=8, narrow_range=True
    )


def _is_float_layer(layer, cls) -> bool:
    return isinstance(layer, cls) and not isinstance(layer, lq.layers_base.QuantizerBase)


def _consumers(model) -> dict:
    """layer name -> names of layers that consume its output."""
    users: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for inbound in (
                node.inbound_layers
                if isinstance(node.inbound_layers, list)
                else [node.inbound_layers]
            ):
                users.setdefault(inbound.name, []).append(layer.name)
    return users


def calibrate_ranges(model: tf.keras.Model, x: np.ndarray, *, batch_size: int = 64) -> dict:
    """Min/max of the input and of every layer output over the calibration inputs."""
    layers = [layer for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]
    probe = tf.keras.Model(model.inputs, [model.inputs[0], *[layer.output for layer in layers]])
    names = [model.layers[0].name, *[layer.name for layer in layers]]
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for start in range(0, len(x), batch_size):
        outs = probe(x[start : start + batch_size], training=False)
        for name, out in zip(names, outs):
            out = out.numpy()
            lo[name] = min(lo[name], float(out.min()))
            hi[name] = max(hi[name], float(out.max()))
    # the range must contain 0 so that zero (padding, ReLU) is exactly representable
    return {n: (min(lo[n], 0.0), max(hi[n], 0.0, lo[n] + 1e-6)) for n in names}


# TFLite's int8 kernels of these ops need the same scale on their inputs and output.
_SAME_SCALE = (
    tf.keras.layers.Concatenate,
    tf.keras.layers.MaxPool2D,
    tf.keras.layers.AveragePooling2D,
    tf.keras.layers.Flatten,
    tf.keras.layers.Reshape,
    tf.keras.layers.ZeroPadding2D,
)


def _is_relu(layer) -> bool:
    if isinstance(layer, tf.keras.layers.ReLU):
        return True
    return (
        isinstance(layer, tf.keras.layers.Activation) and layer.get_config()["activation"] == "relu"
    )


def share_scales(model: tf.keras.Model, ranges: dict) -> dict:
    """Merges the ranges of tensors that int8 ops require to share one scale.

    Concatenations chain whole MeliusNet stages together (every block concatenates the
    previous block's output), so each stage's feature maps end up on one scale.
    """
    from melius_larq.layers import ChannelShuffle

    parent = {name: name for name in ranges}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for layer in model.layers:
        node = layer._inbound_nodes[0] if layer._inbound_nodes else None
        if node is None:
            continue
        inbound = (
            node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]
        )
        # The converter fuses ReLU into a preceding max-pool (they commute), so such a ReLU
        # must share the pool's scale too.
        relu_after_pool = _is_relu(layer) and any(
            isinstance(other, tf.keras.layers.MaxPool2D) for other in inbound
        )
        if isinstance(layer, (*_SAME_SCALE, ChannelShuffle)) or relu_after_pool:
            for other in inbound:
                parent[find(other.name)] = find(layer.name)
    merged: dict[str, tuple[float, float]] = {}
    for name, (lo, hi) in ranges.items():
        root = find(name)
        old = merged.get(root, (lo, hi))
        merged[root] = (min(old[0], lo), max(old[1], hi))
    return {name: merged[find(name)] for name in ranges}


def _fold_bn(weights, bn):
    """Folds a BatchNormalization into conv ``weights`` ([kernel] or [kernel, bias])."""
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1], np.float32)
    scale, shift = _bn_affine(bn)
    return kernel * scale, bias * scale + shift


def _bn_affine(bn):
    """The inference-time per-channel ``x * scale + shift`` of a BatchNormalization."""
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    gamma = bn.gamma.numpy() if bn.scale else np.ones_like(mean)
    beta = bn.beta.numpy() if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _inbound(layer):
    node = layer._inbound_nodes[0]
    return node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]


def _clone(layer, cls=None, config=None, weights=None):
    clone = (cls or layer.__class__).from_config(config or layer.get_config())
    return clone, (layer.get_weights() if weights is None else weights)


# Binary conv outputs are sums of +-1 products (hundreds); MeliusNet concatenates them with
# float features of range ~10, and int8 concatenation needs one scale for all of them.
BINARY_OUTPUT_SCALE = 1 / 32

_SCALE_FREE = (  # commute with a positive per-channel scale
    tf.keras.layers.MaxPool2D,
    tf.keras.layers.AveragePooling2D,
    tf.keras.layers.GlobalAveragePooling2D,
    tf.keras.layers.ZeroPadding2D,
    tf.keras.layers.ReLU,
)


def _divide_inputs(kernel: np.ndarray, scale: np.ndarray, groups: int = 1) -> np.ndarray:
    """Divides a conv/dense kernel's input channels by ``scale`` (undoing an input rescale)."""
    kernel = kernel.copy()
    cin_g, cout = kernel.shape[-2], kernel.shape[-1]
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        kernel[..., :, o] /= scale[g * cin_g : (g + 1) * cin_g]
    return kernel


def prepare_for_int8(
    model: tf.keras.Model, *, binary_output_scale: float = BINARY_OUTPUT_SCALE
) -> tf.keras.Model:
    """A new float model computing the same function in int8-friendly layers.

    * a float conv whose only consumer is a BatchNormalization absorbs it;
    * any other BatchNormalization becomes a 1x1 depthwise conv with bias (one int8 op
      instead of a float multiply and add);
    * a conv/dense with a non-linear activation is split into the linear layer and an
      ``Activation`` layer, so that its pre-activation output gets its own int8 range;
    * binary conv outputs are multiplied by ``binary_output_scale`` and every later layer
      that is not scale-free (BN, float conv, dense) divides it out again per channel, so a
      concatenation of binary sums and float features has one common range (TFLite's int8
      concatenation needs one scale). Signs are unaffected by a positive scale.

    The input model is not modified.

    Raises:
        ValueError: for a model whose rescaled channels reach a layer that cannot absorb
            the scale (e.g. an Add of a binary output and a float tensor).
    """
    if not isinstance(model, tf.keras.Model) or not hasattr(model, "_inbound_nodes"):
        raise ValueError(f"Expected a functional tf.keras.Model, but got {type(model).__name__}.")
    from melius_larq.layers import ChannelShuffle

    users = _consumers(model)
    by_name = {layer.name: layer for layer in model.layers}
    inp = tf.keras.Input(model.input_shape[1:], name=model.layers[0].name)
    tensors = {model.layers[0].name: inp}
    scales = {model.layers[0].name: np.ones(model.input_shape[-1], np.float32)}
    folded: dict[str, str] = {}  # BN name -> conv name that absorbed it
    for layer in model.layers[1:]:
        if layer.name in folded:
            tensors[layer.name] = tensors[folded[layer.name]]
            scales[layer.name] = scales[folded[layer.name]]
            continue
        parents = _inbound(layer)
        args = [tensors[p.name] for p in parents]
        in_scales = [scales[p.name] for p in parents]
        arg = args if len(args) > 1 else args[0]
        s_in = in_scales[0]
        nxt = users.get(layer.name, [])
        activation = None
        channels = layer.output_shape[-1] if isinstance(layer.output_shape, tuple) else None
        out_scale = np.ones(channels or 1, np.float32)
        if _is_float_layer(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
            config = layer.get_config()
            activation = config.get("activation", "linear")
            config["activation"] = "linear"
            weights = layer.get_weights()
            is_depthwise = isinstance(layer, tf.keras.layers.DepthwiseConv2D)
            if not np.all(s_in == 1):
                if is_depthwise:
                    raise ValueError(f"{layer.name}: cannot absorb a rescaled input.")
                weights[0] = _divide_inputs(weights[0], s_in, getattr(layer, "groups", 1))
            if (not is_depthwise and activation == "linear" and len(nxt) == 1
                    and isinstance(by_name[nxt[0]], tf.keras.layers.BatchNormalization)):  # fmt: skip
                kernel, bias = _fold_bn(weights, by_name[nxt[0]])
                config["use_bias"] = True
                weights = [kernel, bias]
                folded[nxt[0]] = layer.name
            clone, weights = _clone(layer, config=config, weights=weights)
        elif isinstance(layer, tf.keras.layers.BatchNormalization):
            scale, shift = _bn_affine(layer)
            clone = tf.keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
            weights = [(scale / s_in).reshape(1, 1, -1, 1), shift]
        else:
            clone, weights = _clone(layer)
            if isinstance(layer, lq.layers_base.QuantizerBase):
                out_scale = None  # set after the rescale below
            elif isinstance(layer, tf.keras.layers.Concatenate):
                out_scale = np.concatenate(in_scales)
            elif isinstance(layer, tf.keras.layers.Add):
                if any(not np.array_equal(t, s_in) for t in in_scales):
                    raise ValueError(f"{layer.name}: adds tensors with different scales.")
                out_scale = s_in
            elif isinstance(layer, ChannelShuffle):
                out_scale = s_in.reshape(layer.groups, -1).T.reshape(-1)
            elif isinstance(layer, tf.keras.layers.Flatten):
                out_scale = np.tile(s_in, int(np.prod(layer.input_shape[1:-1])))
            elif isinstance(layer, _SCALE_FREE) or _is_relu(layer):
                out_scale = s_in
            elif not np.all(s_in == 1):
                raise ValueError(
                    f"{layer.name} ({type(layer).__name__}) cannot absorb a rescaled input."
                )
        out = clone(arg)
        if weights:
            clone.set_weights(weights)
        if out_scale is None:
            out = tf.keras.layers.Rescaling(binary_output_scale, name=f"{layer.name}_rescale")(out)
            out_scale = np.full(layer.output_shape[-1], binary_output_scale, np.float32)
        if activation not in (None, "linear"):
            out = tf.keras.layers.Activation(activation, name=f"{layer.name}_act")(out)
        tensors[layer.name] = out
        scales[layer.name] = out_scale
    return tf.keras.Model(inp, tensors[model.layers[-1].name], name=model.name)


def fake_quant_model(model: tf.keras.Model, ranges: dict) -> tf.keras.Model:
    """A new model with int8 fake-quantization of every tensor and every float kernel.

    ``model`` should come from :func:`prepare_for_int8`; ``ranges`` maps each layer name
    (and the input layer's) to the (min, max) of its output. The input model is not modified.
    """
    inp = tf.keras.Input(model.input_shape[1:], name="input")
    first = model.layers[0].name
    tensors = {first: FakeQuant(*ranges[first], name=f"{first}_fq")(inp)}
    for layer in model.layers[1:]:
        args = [tensors[p.name] for p in _inbound(layer)]
        arg = args if len(args) > 1 else args[0]
        cls = None
        if _is_float_layer(layer, tf.keras.layers.DepthwiseConv2D):
            cls = FakeQuantDepthwiseConv2D
        elif _is_float_layer(layer, tf.keras.layers.Conv2D):
            cls = FakeQuantConv2D
        elif _is_float_layer(layer, tf.keras.layers.Dense):
            cls = FakeQuantDense
        clone, weights = _clone(layer, cls=cls)
        out = clone(arg)
        if weights:
            clone.set_weights(weights)
        tensors[layer.name] = FakeQuant(*ranges[layer.name], name=f"{layer.name}_fq")(out)
    return tf.keras.Model(inp, tensors[model.layers[-1].name], name=f"{model.name}_int8")


def convert_int8(
    model: tf.keras.Model,
    calibration: np.ndarray,
    *,
    target: str = "arm",
    int8_io: bool = False,
) -> bytes:
    """Converts a model to an LCE flatbuffer whose non-binary layers run in int8.

    Args:
        model: a trained functional Keras model.
        calibration: representative preprocessed inputs (a few hundred real images).
        target: LCE target.
        int8_io: also make the flatbuffer's input and output int8.

    Raises:
        ValueError: when no calibration data is given.
    """
    from melius_larq.deploy.convert import convert_model

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 conversion needs calibration data: pass real, preprocessed inputs.")
    prepared = prepare_for_int8(model)
    x = np.asarray(calibration, np.float32)
    qmodel = fake_quant_model(prepared, share_scales(prepared, calibrate_ranges(prepared, x)))
    io = "int8" if int8_io else "float32"
    return convert_model(qmodel, target=target, inference_input_type=io, inference_output_type=io)


def load_calibration(source: str | None, model: tf.keras.Model, *, limit: int = 500) -> np.ndarray:
    """Calibration inputs from a dataset name or a ``.npy`` file of preprocessed inputs."""
    if not source:
        raise ValueError(
            "--int8 needs calibration data: --calibration fashion_mnist|cifar10|inputs.npy"
        )
    if source.endswith(".npy"):
        if not os.path.isfile(source):
            raise ValueError(f"Calibration file {source!r} does not exist.")
        x = np.load(source)[:limit].astype(np.float32)
        if x.shape[1:] != tuple(model.input_shape[1:]):
            raise ValueError(
                f"Calibration inputs have shape {x.shape[1:]}, the model expects "
                f"{tuple(model.input_shape[1:])}."
            )
        return x
    from melius_larq.zoo.data import dataset_inputs

    return dataset_inputs(source, model.input_shape[1:], limit=limit)


def int8_flatbuffer_summary(buf) -> dict:
    """Which compute ops run in int8: ``{op: {"int8": n, "float32": m}}`` by output type."""
    from melius_larq.deploy.flatbuffer import operators, read_model

    fb = read_model(buf)
    sub = fb.subgraphs[0]
    summary: dict[str, dict[str, int]] = {}
    for op in operators(fb):
        kind = {0: "float32", 9: "int8", 2: "int32"}.get(
            sub.tensors[op["outputs"][0]].type, "other"
        )
        summary.setdefault(op["op"], {}).setdefault(kind, 0)
        summary[op["op"]][kind] += 1
    return summary


# (builtin operator, input index of the weights, quantized dimension of that tensor)
_WEIGHT_INPUTS = {
    "CONV_2D": (1, 0),  # (cout, kh, kw, cin): per output channel
    "DEPTHWISE_CONV_2D": (1, 3),  # (1, kh, kw, channels): per channel
    "FULLY_CONNECTED": (1, 0),  # (out, in): per output unit
}
INT8_WEIGHT_PREFIX = "int8_weights/"


def quantize_per_channel(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes in [-127, 127] and one scale per slice along ``axis``.

    ``codes * scales`` (broadcast along ``axis``) is within half a scale step of ``weights``;
    an all-zero slice gets scale 1 and zero codes.
    """
    w = np.asarray(weights, dtype=np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scales = np.max(np.abs(moved), axis=1) / 127.0
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    codes = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return codes, scales


def store_weights_int8(buf: bytes, *, min_elements: int = 256, skip=()) -> bytes:
    """A flatbuffer whose float conv / depthwise / fully-connected weights are stored as int8.

    Weight-only int8 ("W8A32"): each float32 weight tensor of at least ``min_elements``
    values becomes per-channel symmetric int8 codes followed by a ``DEQUANTIZE`` operator, so
    the file shrinks to about 1 byte per non-binary weight while every layer still computes
    in float32 on the dequantized weights (which differ from the originals by at most half a
    quantization step). No calibration data is needed. Binary convolutions keep their
    bit-packed weights. Compare :func:`convert_int8`, which also runs the non-binary layers
    in int8 but quantizes their activations.

    Args:
        buf: an LCE or TFLite flatbuffer (float non-binary layers).
        min_elements: leave smaller weight tensors (biases, tiny kernels) in float32.
        skip: weights stay float32 where one of these substrings is in the name of the
            weight tensor or of its operator's output (usually the Keras layer's name, e.g.
            ``("stem",)``; the converter names a model's final output tensor
            ``StatefulPartitionedCall`` instead).

    Returns:
        The rewritten flatbuffer (the input is not modified).
    """
    from melius_larq import _tflite
    from melius_larq.deploy.flatbuffer import load_flatbuffer

    schema = _tflite.schema()
    tree = _tflite.read_model(load_flatbuffer(buf))
    names = {getattr(schema.BuiltinOperator, k): v for k, v in _WEIGHT_INPUTS.items()}
    dequantize = _tflite.dequantize_opcode(tree)
    graph = tree.subgraphs[0]
    done: set[int] = set()
    new_ops = []
    for op in graph.operators:
        code = _tflite.builtin_code(tree, op.opcodeIndex)
        if code not in names or op.inputs is None or len(op.inputs) <= names[code][0]:
            continue
        index, axis = names[code]
        t = int(op.inputs[index])
        if t < 0 or t in done:  # -1: an optional input that is absent
            continue
        tensor = graph.tensors[t]
        data = tree.buffers[tensor.buffer].data
        if tensor.type != schema.TensorType.FLOAT32 or data is None:
            continue
        shape = tuple(int(d) for d in tensor.shape)
        if len(data) != 4 * int(np.prod(shape)) or np.prod(shape) < min_elements:
            continue
        weights = np.asarray(data, dtype=np.uint8).view("<f4").reshape(shape)
        codes, scales = quantize_per_channel(weights, axis)
        original = (tensor.name or b"").decode(errors="replace")
        consumer = (graph.tensors[int(op.outputs[0])].name or b"").decode(errors="replace")
        if any(part in original or part in consumer for part in skip):
            continue
        name = INT8_WEIGHT_PREFIX + original
        new_ops.append(_tflite.store_int8(tree, t, codes, scales, quantized_dimension=axis,
                                          name=name, dequantize=dequantize))  # fmt: skip
        done.add(t)
    graph.operators = new_ops + list(graph.operators)
    return _tflite.pack(tree)


def convert_int8_weights(model: tf.keras.Model, *, target: str = "arm") -> bytes:
    """Converts a model with LCE and stores its float weights as int8 (see
    :func:`store_weights_int8`); no calibration data is needed."""
    from melius_larq.deploy.convert import convert_model

    return store_weights_int8(convert_model(model, target=target))
