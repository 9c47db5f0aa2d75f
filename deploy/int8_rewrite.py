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
from melius_larq.layers import ChannelShift, ChannelShuffle

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
    # BN -> input channels that never moved over the calibration data
    dead_inputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # binary layer or float conv -> per-channel factor on its output (see _concat_scales)
    out_scales: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


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


class ChannelScale(tf.keras.layers.Layer):
    """Multiplies each channel by a constant: ``x * scale``.

    Placed right after a binary conv, the LCE converter fuses it into the conv's output
    multiplier, so it costs nothing at run time.

    Args:
        scale: one factor per channel (or a single factor).
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, np.float32).reshape(-1)

    def call(self, inputs):
        return inputs * tf.constant(self.scale, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale.tolist()}


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
    scale = _unit_scale(layer)
    if layer.name in graph.out_scales and activation in (None, "linear", "relu"):
        scale = graph.out_scales[layer.name]  # positive: commutes with ReLU
        weights = [weights[0] * scale, *(w * scale for w in weights[1:2])]
    clone, weights = _clone(layer, config=config, weights=weights)
    after = []
    if activation not in (None, "linear"):
        after.append(tf.keras.layers.Activation(activation, name=f"{layer.name}_act"))
    return _Step(clone, weights, scale, after)


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
    if layer.name in graph.dead_inputs:
        # a channel whose input never moved is its constant output: with its (often huge)
        # scale a per-tensor int8 kernel would round every other channel to zero
        scale = np.where(graph.dead_inputs[layer.name], 0.0, scale).astype(np.float32)
    if layer.name in graph.output_bounds:
        # max |a*x + b|, but at least |a| * max |x|: the kernel m*a stays <= 1 / max |x|
        bound = np.maximum(graph.output_bounds[layer.name],
                           np.abs(scale) * graph.input_bounds[layer.name])  # fmt: skip
        m = (1.0 / _floored(bound)).astype(np.float32)
    clone = tf.keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
    kernel = (m * scale / in_scales[0]).reshape(1, 1, -1, 1)
    return _Step(clone, [kernel, m * shift], m)


def _is_presign_batchnorm(layer) -> bool:
    return _is_batchnorm(layer) and feeds_only_signs(layer)


def _negation_exact(layer) -> bool:
    """Whether the binary convs that read ``layer`` can negate an input channel exactly:
    not when they pad with a non-zero value (the padding would not be negated)."""
    for node in layer._outbound_nodes:
        conv = node.outbound_layer
        padded = getattr(conv, "padding", "valid") != "valid"
        if padded and getattr(conv, "pad_values", 0.0) != 0.0:
            return False
    return True


def _presign_batchnorm_as_depthwise(layer, in_scales, graph: _Graph) -> _Step:
    """A pre-sign BatchNorm with negative scales read by convs that pad with ±1 becomes a
    1x1 depthwise conv with a ±1 kernel: ``a*x + b = |a| * (sign(a)*x + t)`` with threshold
    ``t = b / |a|`` has the same sign for every x, and on the rescaled input ``x' = s*x``
    the layer computes ``sign(a)*x' + s*t``. A ±1 kernel is exact in int8, and the output
    keeps the input's range; thresholds are clipped as in :func:`_presign_batchnorm_as_shift`.
    """
    a, b = batchnorm_affine(layer)
    a = np.where(a == 0, 1e-12, a)
    threshold = b / np.abs(a)
    bound = graph.input_bounds.get(layer.name)
    if bound is not None:
        threshold = np.clip(threshold, -THRESHOLD_MARGIN * bound, THRESHOLD_MARGIN * bound)
    s = in_scales[0].astype(np.float64)
    kernel = np.sign(a).astype(np.float32).reshape(1, 1, -1, 1)
    clone = tf.keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
    return _Step(clone, [kernel, (s * threshold).astype(np.float32)],
                 (s / np.abs(a)).astype(np.float32))  # fmt: skip


def _presign_batchnorm_as_shift(layer, in_scales, graph: _Graph) -> _Step:
    """A BatchNorm that only feeds binary quantizers becomes a per-channel shift (an int8
    ADD of one constant per channel).

    ``a*x + b = a * (x + t)`` with threshold ``t = b / a``, so on the rescaled input
    ``x' = s*x`` the shift ``x' + s*t`` equals the BatchNorm's output times ``s / a``. A
    negative ``a`` makes that scale negative: the binary conv that reads the channel
    negates the matching input channel of its kernel (``sign(-y) = -sign(y)``), so no
    multiplication is left at all. Compared with a 1x1 depthwise conv this stores one int8
    constant per channel instead of an int8 kernel, an int32 bias and per-channel
    quantization parameters, and runs a cheaper op. With calibration bounds each threshold
    is clipped to ``THRESHOLD_MARGIN`` times the largest input of its channel: a threshold
    beyond every input only fixes the sign, and a huge one would stretch the int8 range of
    all the other channels.
    """
    a, b = batchnorm_affine(layer)
    a = np.where(a == 0, 1e-12, a)  # a zero scale is a constant sign: keep sign(b)
    if np.any(a < 0) and not _negation_exact(layer):
        return _presign_batchnorm_as_depthwise(layer, in_scales, graph)
    threshold = b / a
    bound = graph.input_bounds.get(layer.name)
    if bound is not None:
        threshold = np.clip(threshold, -THRESHOLD_MARGIN * bound, THRESHOLD_MARGIN * bound)
    s = in_scales[0].astype(np.float64)
    clone = ChannelShift(threshold.shape[0], name=layer.name)
    return _Step(clone, [(s * threshold).astype(np.float32)], (s / a).astype(np.float32))


def _is_binary(layer) -> bool:
    return isinstance(layer, lq.layers_base.QuantizerBase)


def _negate_inputs(kernel: np.ndarray, flip: np.ndarray, groups: int = 1) -> np.ndarray:
    """A binary kernel whose input channels ``flip`` are negated; a latent weight of 0
    (binarized to +1) becomes a tiny negative one, so its sign flips too."""
    kernel = np.where(kernel == 0, np.float32(1e-6), kernel)
    cin_g, cout = kernel.shape[-2], kernel.shape[-1]
    sign = np.where(flip, -1.0, 1.0).astype(kernel.dtype).reshape(groups, cin_g)
    per_group = cout // groups
    out = kernel.copy()
    for g in range(groups):
        out[..., g * per_group : (g + 1) * per_group] *= sign[g][:, None]
    return out


def _rescale_binary_output(layer, in_scales, graph: _Graph) -> _Step:
    """A binary layer is copied and its output multiplied by ``binary_output_scale``.

    Input channels with a negative scale (a pre-sign BatchNorm with a negative scale, see
    :func:`_presign_batchnorm_as_shift`) are negated in the kernel; positive scales do not
    change a sign.
    """
    s = graph.out_scales.get(layer.name)
    if s is None:
        s = np.full(layer.output_shape[-1], graph.binary_output_scale, np.float32)
    step = _copy(layer, s)
    flip = in_scales[0] < 0
    if flip.any():
        kernel = step.weights[0]
        if kernel.shape != tuple(layer.kernel.shape):
            raise ValueError(f"{layer.name}: cannot find the kernel among the layer's weights.")
        step.weights[0] = _negate_inputs(kernel, flip, getattr(layer, "groups", 1))
    step.after.append(ChannelScale(s, name=f"{layer.name}_rescale"))
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
    if np.any(in_scales[0] < 0) and not isinstance(layer, tf.keras.layers.ZeroPadding2D):
        raise ValueError(f"{layer.name} ({type(layer).__name__}) cannot absorb a negated input.")
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
    (_is_presign_batchnorm, _presign_batchnorm_as_shift),
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


def _peaks(model: tf.keras.Model, tensors: dict, calibration, batch_size: int = 64) -> dict:
    """Per-channel ``max |t|`` of each named tensor over the calibration inputs."""
    names = list(tensors)
    probe = tf.keras.Model(model.inputs, [tensors[n] for n in names])
    peaks = {n: np.zeros(tensors[n].shape[-1]) for n in names}
    if not names:
        return peaks
    x = np.asarray(calibration, np.float32)
    for start in range(0, len(x), batch_size):
        outs = probe(x[start : start + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, out in zip(names, outs, strict=True):
            out = np.abs(np.asarray(out)).reshape(-1, out.shape[-1])
            peaks[n] = np.maximum(peaks[n], out.max(axis=0))
    return peaks


def _floored(peak: np.ndarray) -> np.ndarray:
    floor = BOUND_FLOOR * np.median(peak) if np.any(peak > 0) else 1.0
    return np.maximum(peak, floor)


def _reaches_concat(graph: _Graph) -> Callable[[str], bool]:
    """Whether a layer's output reaches a Concatenate through scale-free layers and Adds."""
    memo: dict[str, bool] = {}

    def reaches(name: str) -> bool:
        if name not in memo:
            memo[name] = False  # cycles cannot occur; this only guards the recursion
            hits = False
            for user in graph.users.get(name, []):
                layer = graph.by_name[user]
                if isinstance(layer, tf.keras.layers.Concatenate):
                    hits = True
                elif isinstance(layer, tf.keras.layers.Add) or _is_scale_free(layer):
                    hits = hits or reaches(user)
            memo[name] = hits
        return memo[name]

    return reaches


def _normalisable(layer, graph: _Graph) -> str | None:
    """For a binary layer or a linear/ReLU float Conv2D: the name of the layer whose output
    its rescaled output stands for (a BatchNorm the conv absorbs, or itself); else None."""
    if _is_binary(layer):
        return layer.name
    if _is_float_layer(layer, tf.keras.layers.Conv2D) and not isinstance(
        layer, tf.keras.layers.DepthwiseConv2D
    ):
        activation = layer.get_config().get("activation", "linear")
        bn = _only_batchnorm_consumer(layer, graph)
        if activation == "linear" and bn is not None:
            return bn.name
        if activation in ("linear", "relu"):
            return layer.name
    return None


def _concat_scales(model: tf.keras.Model, graph: _Graph, calibration) -> dict[str, np.ndarray]:
    """Per-channel output factors that bring every concatenated channel to ``[-1, 1]``.

    TFLite's int8 concatenation gives all its inputs one scale; in a MeliusNet stage that
    is every feature map of the stage, whose channels span very different ranges, so the
    channels with small ranges would get a few int8 levels. Each binary layer and float
    conv whose output reaches a Concatenate therefore has its output divided, per channel,
    by its largest value over the calibration inputs (binary layers through a
    :class:`ChannelScale` that LCE fuses into the conv, float convs in their kernel), and
    the later layers divide the factor out. The inputs of an Add share their factors
    (the largest of their and the sum's bounds); an Add with an input that cannot be
    rescaled leaves its group alone.
    """
    reaches = _reaches_concat(graph)
    stands_for = {}
    for layer in model.layers:
        target = _normalisable(layer, graph)
        if target is not None and reaches(target):
            stands_for[layer.name] = target
    if not stands_for:
        return {}
    adds = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Add)]
    adds = [a for a in adds if any(p.name in stands_for for p in _inbound(a))]
    tensors = {n: graph.by_name[t].output for n, t in stands_for.items()}
    tensors.update({a.name: a.output for a in adds})
    peaks = _peaks(model, tensors, calibration)
    group = {n: n for n in stands_for}

    def find(n):
        while group[n] != n:
            n = group[n]
        return n

    blocked, extra = set(), {}
    for add in adds:
        names = [p.name for p in _inbound(add)]
        if not all(n in stands_for for n in names):
            blocked.update(find(n) for n in names if n in stands_for)
            continue
        root = find(names[0])
        for n in names[1:]:
            group[find(n)] = root
        extra.setdefault(root, []).append(add.name)
    bounds: dict[str, np.ndarray] = {}
    for n in stands_for:
        root = find(n)
        bounds[root] = np.maximum(bounds.get(root, 0.0), peaks[n])
    for root, names in list(extra.items()):
        for add in names:
            bounds[find(root)] = np.maximum(bounds[find(root)], peaks[add])
    blocked = {find(b) for b in blocked}
    return {n: (1.0 / _floored(bounds[find(n)])).astype(np.float32)
            for n in stands_for if find(n) not in blocked}  # fmt: skip


# A calibration input channel whose peak is below this share of its layer's largest peak
# never moved: a dead channel (e.g. a ReLU output that is always 0).
DEAD_CHANNEL = 1e-6


def _batchnorm_bounds(model: tf.keras.Model, calibration):
    """Per-channel ``max |input|`` and ``max |output|`` of every BatchNorm over the
    calibration inputs, and which input channels are dead (never moved). Input bounds are
    raised to at least ``BOUND_FLOOR`` times their layer's median, so that a channel that
    never moved cannot blow up a normalising factor."""
    layers = [layer for layer in model.layers if _is_batchnorm(layer)]
    if not layers or calibration is None:
        return {}, {}, {}
    tensors = {(layer.name, io): t for layer in layers
               for io, t in ((0, layer.input), (1, layer.output))}  # fmt: skip
    peaks = _peaks(model, tensors, calibration)
    inputs, outputs, dead = {}, {}, {}
    for layer in layers:
        peak = peaks[(layer.name, 0)]
        inputs[layer.name] = _floored(peak)
        outputs[layer.name] = peaks[(layer.name, 1)]
        dead[layer.name] = peak <= DEAD_CHANNEL * peak.max()
    return inputs, outputs, dead


def prepare_for_int8(
    model: tf.keras.Model,
    *,
    binary_output_scale: float = BINARY_OUTPUT_SCALE,
    calibration: np.ndarray | None = None,
    normalize_batchnorms: bool = False,
    normalize_concat_inputs: bool = True,
    constant_dead_channels: bool = True,
) -> tf.keras.Model:
    """A new float model computing the same function in int8-friendly layers.

    * a float conv whose only consumer is a BatchNormalization absorbs it;
    * a BatchNormalization that only feeds binary quantizers becomes a per-channel shift by
      its thresholds (the same signs; a negative scale negates the binary kernel's input
      channel instead);
    * any other BatchNormalization becomes a 1x1 depthwise conv with bias (one int8 op
      instead of a float multiply and add);
    * a conv/dense with a non-linear activation is split into the linear layer and an
      ``Activation`` layer, so that its pre-activation output gets its own int8 range;
    * binary conv outputs are multiplied by per-channel factors (with ``calibration``:
      those that bring every concatenated channel to ``[-1, 1]``; otherwise
      ``binary_output_scale``) and every later layer that is not scale-free (BN, float
      conv, dense) divides them out again, so a concatenation of binary sums and float
      features has one common range (TFLite's int8 concatenation needs one scale). Signs
      are unaffected by a positive scale;
    * with ``calibration``, a BatchNorm input channel that never moved (a dead ReLU
      channel) keeps only its constant output, so its scale cannot dominate a per-tensor
      int8 kernel.

    Args:
        model: a functional Keras model (the input is not modified).
        binary_output_scale: the factor applied to every binary layer's output.
        calibration: representative inputs; when given, pre-sign thresholds are clipped to
            the inputs each channel saw (see ``_presign_batchnorm_as_shift``).
        normalize_batchnorms: with ``calibration``, also divide every other BatchNorm's
            output channels by their calibration bound (the later layers divide it out).
            Off by default: it can cost int8 accuracy (see the int8 ablation,
            ``python -m melius_larq.zoo.experiments.int8_ablation``).
        normalize_concat_inputs: with ``calibration``, scale the outputs of the binary
            layers and float convs whose outputs are concatenated to ``[-1, 1]`` per
            channel (see ``_concat_scales``); without it binary outputs are multiplied by
            ``binary_output_scale``.
        constant_dead_channels: with ``calibration``, a BatchNorm input channel that never
            moved keeps only its constant output.

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
    input_bounds, output_bounds, dead_inputs = _batchnorm_bounds(model, calibration)
    if constant_dead_channels:
        graph.dead_inputs = dead_inputs
    graph.input_bounds = {n: b for n, b in input_bounds.items()
                          if _is_presign_batchnorm(graph.by_name[n]) or normalize_batchnorms}  # fmt: skip
    if normalize_batchnorms:
        graph.output_bounds = output_bounds
    if normalize_concat_inputs and calibration is not None:
        graph.out_scales = _concat_scales(model, graph, calibration)
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
