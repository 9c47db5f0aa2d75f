"""Keras graph rewrite for int8 conversion: the same function in int8-friendly layers.

:func:`prepare_for_int8` copies a functional model layer by layer. Each layer is matched
against a list of rules (:data:`_RULES`, a matcher and a rewrite function each); the first
rule that matches says what the layer becomes. A per-channel scale travels with every tensor,
so that binary outputs can be rescaled and the scale divided out again where a layer can
absorb it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import larq as lq
import numpy as np

from melius_larq._compat import tf
from melius_larq.fold import batchnorm_affine, feeds_only_signs
from melius_larq.layers import ChannelShuffle

__all__ = ["BINARY_OUTPUT_SCALE", "prepare_for_int8"]

# Binary conv outputs are sums of +-1 products (hundreds); MeliusNet concatenates them with
# float features of range ~10, and int8 concatenation needs one scale for all of them.
BINARY_OUTPUT_SCALE = 1 / 32
# Pre-sign thresholds are clipped to this multiple of the largest calibration input.
THRESHOLD_MARGIN = 1.25
# Calibration input bounds below this share of their layer's median are raised to it.
BOUND_FLOOR = 0.1

_SCALE_FREE = (  # commute with a positive per-channel scale
    tf.keras.layers.MaxPool2D,
    tf.keras.layers.AveragePooling2D,
    tf.keras.layers.GlobalAveragePooling2D,
    tf.keras.layers.ZeroPadding2D,
    tf.keras.layers.ReLU,
)


# Graph helpers, shared with the fake-quantization step -----------------------------------
def _is_float_layer(layer, cls) -> bool:
    return isinstance(layer, cls) and not isinstance(layer, lq.layers_base.QuantizerBase)


def _is_relu(layer) -> bool:
    if isinstance(layer, tf.keras.layers.ReLU):
        return True
    return (
        isinstance(layer, tf.keras.layers.Activation) and layer.get_config()["activation"] == "relu"
    )


def _inbound(layer) -> list:
    node = layer._inbound_nodes[0]
    return node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]


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


def _clone(layer, cls=None, config=None, weights=None):
    clone = (cls or layer.__class__).from_config(config or layer.get_config())
    return clone, (layer.get_weights() if weights is None else weights)


# Rewrite steps ----------------------------------------------------------------------------
@dataclasses.dataclass
class _Graph:
    """What the rewrite steps need to know about the original model and the copy so far."""

    users: dict[str, list[str]]
    by_name: dict[str, tf.keras.layers.Layer]
    binary_output_scale: float
    folded: dict[str, str] = dataclasses.field(default_factory=dict)  # BN -> conv that absorbed it
    # BN -> per-channel max |input| over calibration data (raised to a floor)
    input_bounds: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # other BN (not absorbed by a conv) -> per-channel max |output| over calibration data
    output_bounds: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Step:
    """What one layer of the original model becomes.

    ``layer`` is called on the (rewritten) inputs and gets ``weights``; the layers of
    ``after`` follow it in order; ``scale`` is the per-channel scale of the final output
    relative to the original layer's output.
    """

    layer: tf.keras.layers.Layer
    weights: list
    scale: np.ndarray
    after: list = dataclasses.field(default_factory=list)


def _unit_scale(layer) -> np.ndarray:
    channels = layer.output_shape[-1] if isinstance(layer.output_shape, tuple) else None
    return np.ones(channels or 1, np.float32)


def _copy(layer, scale) -> _Step:
    clone, weights = _clone(layer)
    return _Step(clone, weights, scale)


def _divide_inputs(kernel: np.ndarray, scale: np.ndarray, groups: int = 1) -> np.ndarray:
    """Divides a conv/dense kernel's input channels by ``scale`` (undoing an input rescale)."""
    kernel = kernel.copy()
    cin_g, cout = kernel.shape[-2], kernel.shape[-1]
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        kernel[..., :, o] /= scale[g * cin_g : (g + 1) * cin_g]
    return kernel


def _fold_bn(weights, bn):
    """Folds a BatchNormalization into conv ``weights`` ([kernel] or [kernel, bias])."""
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1], np.float32)
    scale, shift = batchnorm_affine(bn, dtype=np.float32)
    return kernel * scale, bias * scale + shift


def _only_batchnorm_consumer(layer, graph: _Graph):
    """The BatchNormalization that is the only consumer of ``layer``'s output, or None."""
    users = graph.users.get(layer.name, [])
    if len(users) == 1 and isinstance(graph.by_name[users[0]], tf.keras.layers.BatchNormalization):
        return graph.by_name[users[0]]
    return None


def _is_float_conv_or_dense(layer) -> bool:
    return _is_float_layer(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense))


def _float_conv_or_dense(layer, in_scales, graph: _Graph) -> _Step:
    """Linear conv/dense: divides out the input scale, absorbs a following BatchNorm, and
    splits off a non-linear activation."""
    config = layer.get_config()
    activation = config.get("activation", "linear")
    config["activation"] = "linear"
    weights = layer.get_weights()
    is_depthwise = isinstance(layer, tf.keras.layers.DepthwiseConv2D)
    if not np.all(in_scales[0] == 1):
        if is_depthwise:
            raise ValueError(f"{layer.name}: cannot absorb a rescaled input.")
        weights[0] = _divide_inputs(weights[0], in_scales[0], getattr(layer, "groups", 1))
    bn = _only_batchnorm_consumer(layer, graph)
    if not is_depthwise and activation == "linear" and bn is not None:
        weights = list(_fold_bn(weights, bn))
        config["use_bias"] = True
        graph.folded[bn.name] = layer.name
    clone, weights = _clone(layer, config=config, weights=weights)
    after = []
    if activation not in (None, "linear"):
        after.append(tf.keras.layers.Activation(activation, name=f"{layer.name}_act"))
    return _Step(clone, weights, _unit_scale(layer), after)


def _is_batchnorm(layer) -> bool:
    return isinstance(layer, tf.keras.layers.BatchNormalization)


def _batchnorm_as_depthwise(layer, in_scales, graph: _Graph) -> _Step:
    """A BatchNorm (not absorbed by a conv) becomes a 1x1 depthwise conv with bias.

    With calibration bounds (``max |a*x + b|`` per channel) each output channel is divided
    by its bound, so all channels share one int8 range; the later layers divide the factor
    out again (the rescaling of ``prepare_for_int8``). Without it a per-tensor int8 kernel
    rounds the channels with small scales to a few levels, or to zero.
    """
    scale, shift = batchnorm_affine(layer, dtype=np.float32)
    m = np.ones_like(scale)
    if layer.name in graph.output_bounds:
        # max |a*x + b|, but at least |a| * max |x|: the kernel m*a stays <= 1 / max |x|
        bound = np.maximum(graph.output_bounds[layer.name],
                           np.abs(scale) * graph.input_bounds[layer.name])  # fmt: skip
        m = (1.0 / np.where(bound > 0, bound, 1.0)).astype(np.float32)
    clone = tf.keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
    kernel = (m * scale / in_scales[0]).reshape(1, 1, -1, 1)
    return _Step(clone, [kernel, m * shift], m)


def _is_presign_batchnorm(layer) -> bool:
    return _is_batchnorm(layer) and feeds_only_signs(layer)


def _presign_batchnorm_as_depthwise(layer, in_scales, graph: _Graph) -> _Step:
    """A BatchNorm that only feeds binary quantizers becomes a 1x1 depthwise conv with a
    ±1 kernel: ``a*x + b = |a| * (sign(a)*x + t)`` with threshold ``t = b / |a|`` has the
    same sign for every x, and on the rescaled input ``x' = s*x`` the layer computes
    ``sign(a)*x' + s*t``. A ±1 kernel is exact in int8 (a per-tensor kernel of the scales
    ``a`` would round the channels with small scales to a few levels or to zero, and move
    their thresholds), and the output keeps the input's range. With calibration bounds each
    threshold is clipped to ``THRESHOLD_MARGIN`` times the largest input of its channel: a
    threshold beyond every input only fixes the sign, and a huge one would stretch the int8
    range of all the other channels.
    """
    a, b = batchnorm_affine(layer)
    a = np.where(a == 0, 1e-12, a)  # a zero scale is a constant sign: keep sign(b)
    threshold = b / np.abs(a)
    bound = graph.input_bounds.get(layer.name)
    if bound is not None:
        threshold = np.clip(threshold, -THRESHOLD_MARGIN * bound, THRESHOLD_MARGIN * bound)
    s = in_scales[0].astype(np.float64)
    kernel = np.sign(a).astype(np.float32).reshape(1, 1, -1, 1)
    clone = tf.keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
    return _Step(clone, [kernel, (s * threshold).astype(np.float32)],
                 (s / np.abs(a)).astype(np.float32))  # fmt: skip


def _is_binary(layer) -> bool:
    return isinstance(layer, lq.layers_base.QuantizerBase)


def _rescale_binary_output(layer, in_scales, graph: _Graph) -> _Step:
    """A binary layer is copied and its output multiplied by ``binary_output_scale``."""
    s = graph.binary_output_scale
    step = _copy(layer, np.full(layer.output_shape[-1], s, np.float32))
    step.after.append(tf.keras.layers.Rescaling(s, name=f"{layer.name}_rescale"))
    return step


def _concatenate(layer, in_scales, graph: _Graph) -> _Step:
    return _copy(layer, np.concatenate(in_scales))


def _add(layer, in_scales, graph: _Graph) -> _Step:
    if any(not np.array_equal(t, in_scales[0]) for t in in_scales):
        raise ValueError(f"{layer.name}: adds tensors with different scales.")
    return _copy(layer, in_scales[0])


def _shuffle(layer, in_scales, graph: _Graph) -> _Step:
    return _copy(layer, in_scales[0].reshape(layer.groups, -1).T.reshape(-1))


def _flatten(layer, in_scales, graph: _Graph) -> _Step:
    return _copy(layer, np.tile(in_scales[0], int(np.prod(layer.input_shape[1:-1]))))


def _is_scale_free(layer) -> bool:
    return isinstance(layer, _SCALE_FREE) or _is_relu(layer)


def _keep_scale(layer, in_scales, graph: _Graph) -> _Step:
    return _copy(layer, in_scales[0])


def _is_any(layer) -> bool:
    return True


def _unscaled(layer, in_scales, graph: _Graph) -> _Step:
    """Any other layer is copied as it is, and must not receive a rescaled input."""
    if not np.all(in_scales[0] == 1):
        raise ValueError(f"{layer.name} ({type(layer).__name__}) cannot absorb a rescaled input.")
    return _copy(layer, _unit_scale(layer))


def _isinstance_of(cls) -> Callable[[tf.keras.layers.Layer], bool]:
    return lambda layer: isinstance(layer, cls)


# (matcher, rewrite) pairs; the first matching rule rewrites the layer.
_RULES: list[tuple[Callable, Callable[..., _Step]]] = [
    (_is_float_conv_or_dense, _float_conv_or_dense),
    (_is_presign_batchnorm, _presign_batchnorm_as_depthwise),
    (_is_batchnorm, _batchnorm_as_depthwise),
    (_is_binary, _rescale_binary_output),
    (_isinstance_of(tf.keras.layers.Concatenate), _concatenate),
    (_isinstance_of(tf.keras.layers.Add), _add),
    (_isinstance_of(ChannelShuffle), _shuffle),
    (_isinstance_of(tf.keras.layers.Flatten), _flatten),
    (_is_scale_free, _keep_scale),
    (_is_any, _unscaled),
]


def _rewrite(layer, in_scales, graph: _Graph) -> _Step:
    return next(rewrite for matches, rewrite in _RULES if matches(layer))(layer, in_scales, graph)


def _batchnorm_bounds(model: tf.keras.Model, calibration, batch_size: int = 64):
    """Per-channel ``max |input|`` and ``max |output|`` of every BatchNorm over the
    calibration inputs. Input bounds are raised to at least ``BOUND_FLOOR`` times their
    layer's median, so that a channel that never moved (a constant input) cannot blow up a
    normalising factor."""
    layers = [layer for layer in model.layers if _is_batchnorm(layer)]
    if not layers or calibration is None:
        return {}, {}
    probe = tf.keras.Model(
        model.inputs, [t for layer in layers for t in (layer.input, layer.output)]
    )
    peaks = {(layer.name, io): np.zeros(layer.input_shape[-1]) for layer in layers for io in (0, 1)}
    x = np.asarray(calibration, np.float32)
    for start in range(0, len(x), batch_size):
        outs = probe(x[start : start + batch_size], training=False)
        for key, out in zip(peaks, outs, strict=True):
            out = np.abs(np.asarray(out)).reshape(-1, out.shape[-1])
            peaks[key] = np.maximum(peaks[key], out.max(axis=0))
    inputs, outputs = {}, {}
    for layer in layers:
        peak = peaks[(layer.name, 0)]
        floor = BOUND_FLOOR * np.median(peak) if np.any(peak > 0) else 1.0
        inputs[layer.name] = np.maximum(peak, floor)
        outputs[layer.name] = peaks[(layer.name, 1)]
    return inputs, outputs


def prepare_for_int8(
    model: tf.keras.Model,
    *,
    binary_output_scale: float = BINARY_OUTPUT_SCALE,
    calibration: np.ndarray | None = None,
    normalize_batchnorms: bool = True,
) -> tf.keras.Model:
    """A new float model computing the same function in int8-friendly layers.

    * a float conv whose only consumer is a BatchNormalization absorbs it;
    * a BatchNormalization that only feeds binary quantizers becomes a 1x1 depthwise conv
      with a ±1 kernel and its thresholds as bias (the same signs, exact in int8);
    * any other BatchNormalization becomes a 1x1 depthwise conv with bias (one int8 op
      instead of a float multiply and add);
    * a conv/dense with a non-linear activation is split into the linear layer and an
      ``Activation`` layer, so that its pre-activation output gets its own int8 range;
    * binary conv outputs are multiplied by ``binary_output_scale`` and every later layer
      that is not scale-free (BN, float conv, dense) divides it out again per channel, so a
      concatenation of binary sums and float features has one common range (TFLite's int8
      concatenation needs one scale). Signs are unaffected by a positive scale.

    Args:
        model: a functional Keras model (the input is not modified).
        binary_output_scale: the factor applied to every binary layer's output.
        calibration: representative inputs; when given, pre-sign thresholds are clipped to
            the inputs each channel saw (see ``_presign_batchnorm_as_depthwise``).
        normalize_batchnorms: with ``calibration``, also divide every other BatchNorm's
            output channels by their calibration bound (the later layers divide it out).

    Returns:
        The new functional model.

    Raises:
        ValueError: for a model that is not functional, or whose rescaled channels reach a
            layer that cannot absorb the scale (e.g. an Add of a binary output and a float
            tensor).
    """
    if not isinstance(model, tf.keras.Model) or not hasattr(model, "_inbound_nodes"):
        raise ValueError(f"Expected a functional tf.keras.Model, but got {type(model).__name__}.")
    graph = _Graph(
        users=_consumers(model),
        by_name={layer.name: layer for layer in model.layers},
        binary_output_scale=binary_output_scale,
    )
    input_bounds, output_bounds = _batchnorm_bounds(model, calibration)
    graph.input_bounds = {n: b for n, b in input_bounds.items()
                          if _is_presign_batchnorm(graph.by_name[n]) or normalize_batchnorms}  # fmt: skip
    if normalize_batchnorms:
        graph.output_bounds = output_bounds
    first = model.layers[0].name
    inp = tf.keras.Input(model.input_shape[1:], name=first)
    tensors = {first: inp}
    scales = {first: np.ones(model.input_shape[-1], np.float32)}
    for layer in model.layers[1:]:
        if layer.name in graph.folded:  # absorbed: the conv's output stands for it
            tensors[layer.name] = tensors[graph.folded[layer.name]]
            scales[layer.name] = scales[graph.folded[layer.name]]
            continue
        parents = _inbound(layer)
        args = [tensors[p.name] for p in parents]
        step = _rewrite(layer, [scales[p.name] for p in parents], graph)
        out = step.layer(args if len(args) > 1 else args[0])
        if step.weights:
            step.layer.set_weights(step.weights)
        for after in step.after:
            out = after(out)
        tensors[layer.name] = out
        scales[layer.name] = step.scale
    return tf.keras.Model(inp, tensors[model.layers[-1].name], name=model.name)
