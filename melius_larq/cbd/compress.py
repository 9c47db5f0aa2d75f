"""``compress_model``: the CBD model-to-model transform and its report.

The transform follows tfmot's ``quantize_model``: it returns a **new** model (a
``tf.keras.models.clone_model`` copy with the same weights, uncompiled, without optimizer
state) whose Conv2D and Dense kernels are replaced by their CBD reconstructions
``W_hat = m S sum_i c 2^i B_i``; the input model is not modified. Biases, normalisation layers
and excluded layers keep their float32 values and are listed in the report.

``method="plain"`` runs the baseline instead: per-output-channel symmetric b-bit rounding
(:mod:`melius_larq.cbd.plain`), with the same layer selection, the same report and the same
bit accounting, so that the two can be compared at equal bits per weight.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from melius_larq._compat import tf
from melius_larq._keras_utils import walk_layers
from melius_larq.cbd.decompose import (
    FALLBACKS,
    LayerCBD,
    _check_bits,
    _check_bottleneck,
    decompose_kernel,
)
from melius_larq.cbd.plain import (
    PlainLayer,
    _check_granularity,
    _check_plain_bits,
    quantize_kernel_plain,
)

__all__ = [
    "METHODS",
    "CompressionReport",
    "Exclusion",
    "LayerReport",
    "compress_model",
    "compressible_layers",
    "replace_kernels",
]

METHODS = ("cbd", "plain")
# CBD's two floats per layer, m and a, counted as float32 like the plain baseline's scales.
CBD_SCALE_BITS = 64

_NORMALIZATION = (
    tf.keras.layers.BatchNormalization,
    tf.keras.layers.LayerNormalization,
    tf.keras.layers.GroupNormalization,
)
# Conv2D subclasses whose kernels are not (kh, kw, cin, cout) filters of a plain convolution.
_OTHER_CONVS = (
    tf.keras.layers.Conv2DTranspose,
    tf.keras.layers.DepthwiseConv2D,
    tf.keras.layers.SeparableConv2D,
)


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """A layer with weights that was not compressed.

    Attributes:
        name: layer path (``outer/inner`` inside nested models).
        class_name: Keras class.
        reason: why it was left in float32.
        params: parameters it keeps in float32.
    """

    name: str
    class_name: str
    reason: str
    params: int


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """Per-layer numbers of a compression (all plain Python values).

    Attributes:
        name: layer path.
        kind: ``"conv"`` or ``"dense"``.
        kernel_shape: Keras kernel shape.
        matrix_shape: ``(h, w)`` of the CBD matrix (for ``"plain"`` the same matricization,
            for comparison).
        bits: J for ``"cbd"``, b for ``"plain"``.
        a: the scale; ``a_s`` and ``a_i`` the top and bottom plane exponents (None for
            ``"plain"``).
        rank_bound: ``floor(bottleneck * min(h, w))``, the search's budget for ``rank(R > a)``
            (None for ``"plain"``).
        ranks: ``{i: r_i}`` GF(2) ranks of the planes ``i >= 0`` (empty for ``"plain"``).
        storage: ``"factored"``, ``"dense"`` (fallback) or ``"mixed"`` (per-plane fallback);
            always ``"dense"`` for ``"plain"``.
        weights: kernel size ``h w``; ``payload_bits`` the stored bits of the codes: sign,
            dense planes and GF(2) factors for ``"cbd"``, ``b`` per weight for ``"plain"``.
        max_error, rms_error: of ``W - W_hat``; ``error_bound`` is ``m D`` (``"cbd"``) or
            ``max_c s_c / 2`` (``"plain"``).
        bias_params: float32 bias parameters of the layer (not compressed).
        two_conv: result of the optional integer-exactness check, else None.
        method: ``"cbd"`` or ``"plain"``.
        scale_bits: the layer's float32 constants: 64 for CBD's ``m`` and ``a``, 32 per output
            channel for the plain scales. Not part of ``payload_bits``.
        dense_bits: what the same codes cost with every plane stored densely: ``h w (J + 1)``
            for ``"cbd"`` (sign + J planes), ``h w b`` for ``"plain"``.
        factor_bits: ``sum r_i (h + w)`` over the planes stored as GF(2) factors.
        factored_planes: exponents of the planes stored as GF(2) factors (``a_s`` down to 0
            when the layer is factored, none in the dense fallback).
    """

    name: str
    kind: str
    kernel_shape: tuple[int, ...]
    matrix_shape: tuple[int, int]
    bits: int
    a: float | None
    a_s: int | None
    a_i: int | None
    rank_bound: int | None
    ranks: dict[int, int]
    storage: str
    weights: int
    payload_bits: int
    max_error: float
    rms_error: float
    error_bound: float
    bias_params: int
    two_conv: dict | None = None
    method: str = "cbd"
    scale_bits: int = 0
    dense_bits: int = 0
    factor_bits: int = 0
    factored_planes: tuple[int, ...] = ()

    @property
    def bits_per_weight(self) -> float:
        """Payload bits per weight (the paper's figure: the float constants not counted)."""
        return self.payload_bits / self.weights

    @property
    def bits_per_weight_with_scales(self) -> float:
        """Payload and float32 constants (``scale_bits``) per weight."""
        return (self.payload_bits + self.scale_bits) / self.weights

    @property
    def saved_bits(self) -> int:
        """``dense_bits - payload_bits``: what GF(2) factoring saves over dense planes.

        An empty factored plane (rank 0) saves a whole plane; with ``a_s = 0`` that happens
        when the search returns ``a = 1``, and then the layer's top magnitude plane carries no
        information, so the saving comes with one effective magnitude bit fewer.
        """
        return self.dense_bits - self.payload_bits

    @property
    def factoring_engaged(self) -> bool:
        """Whether a plane stored as GF(2) factors has a rank above 0."""
        return any(self.ranks.get(i, 0) > 0 for i in self.factored_planes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["kernel_shape"] = list(self.kernel_shape)
        out["matrix_shape"] = list(self.matrix_shape)
        out["ranks"] = {str(i): r for i, r in self.ranks.items()}
        out["factored_planes"] = list(self.factored_planes)
        out["bits_per_weight"] = self.bits_per_weight
        out["bits_per_weight_with_scales"] = self.bits_per_weight_with_scales
        out["saved_bits"] = self.saved_bits
        out["factoring_engaged"] = self.factoring_engaged
        if self.two_conv is not None:
            out["two_conv"] = {
                **self.two_conv,
                "planes": {str(i): v for i, v in self.two_conv["planes"].items()},
            }
        return out


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """What ``compress_model`` did: per-layer numbers, exclusions and the network total.

    ``str(report)`` is a Markdown table; ``to_dict()``/``to_json()`` give the same numbers.
    ``decompositions`` holds the :class:`~melius_larq.cbd.decompose.LayerCBD` of every
    compressed layer (planes and factors), used by ``save_cbd`` and ``export_tflite``; for
    ``method="plain"`` it holds :class:`~melius_larq.cbd.plain.PlainLayer` objects (codes and
    scales), which those two functions refuse.

    Attributes:
        model_name: name of the input model.
        bits: J for ``"cbd"``, b for ``"plain"``.
        bottleneck: the ratio used by the scale search (None for ``"plain"``).
        fallback: ``"layer"`` or ``"plane"`` (None for ``"plain"``).
        layers: one :class:`LayerReport` per compressed kernel, in model order.
        excluded: one :class:`Exclusion` per layer with weights that was left alone.
        float_params: parameters kept in float32 (biases, normalisation, excluded layers).
        method: ``"cbd"`` or ``"plain"``.
        granularity: for ``"plain"``, one scale per ``"channel"`` or per ``"layer"`` (None
            for ``"cbd"``).
    """

    model_name: str
    bits: int
    bottleneck: float | None
    fallback: str | None
    layers: tuple[LayerReport, ...]
    excluded: tuple[Exclusion, ...]
    float_params: int
    decompositions: Mapping[str, LayerCBD | PlainLayer] = dataclasses.field(
        repr=False, compare=False
    )
    method: str = "cbd"
    granularity: str | None = None

    @property
    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def total_bits(self) -> int:
        return sum(layer.payload_bits for layer in self.layers)

    @property
    def total_scale_bits(self) -> int:
        return sum(layer.scale_bits for layer in self.layers)

    @property
    def bits_per_weight(self) -> float:
        """Network bits/weight: stored bits over weights of the compressed kernels only."""
        return self.total_bits / self.total_weights

    @property
    def bits_per_weight_with_scales(self) -> float:
        """Like ``bits_per_weight``, with the layers' float32 constants counted too."""
        return (self.total_bits + self.total_scale_bits) / self.total_weights

    @property
    def saved_bits(self) -> int:
        """Bits the GF(2) factoring saves over storing every plane densely (0 for plain)."""
        return sum(layer.saved_bits for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "method": self.method,
            "granularity": self.granularity,
            "bits": self.bits,
            "bottleneck": self.bottleneck,
            "fallback": self.fallback,
            "bits_per_weight": self.bits_per_weight,
            "bits_per_weight_with_scales": self.bits_per_weight_with_scales,
            "total_weights": self.total_weights,
            "total_bits": self.total_bits,
            "total_scale_bits": self.total_scale_bits,
            "saved_bits": self.saved_bits,
            "layers_factoring_engaged": [r.name for r in self.layers if r.factoring_engaged],
            "layers_a_s_above_0": [r.name for r in self.layers if (r.a_s or 0) > 0],
            "float_params": self.float_params,
            "layers": [layer.to_dict() for layer in self.layers],
            "excluded": [dataclasses.asdict(e) for e in self.excluded],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def _cbd_table(self) -> list[str]:
        check = any(layer.two_conv is not None for layer in self.layers)
        head = (
            "| layer | kind | matrix | a | a_s | ranks i>=0 (budget) | storage | factor bits "
            "| saved bits/w | bits/w | max err | rms err | bound mD |"
            + (" two-conv |" if check else "")
        )
        lines = [
            f"{self.model_name}: CBD with J={self.bits}, bottleneck={self.bottleneck:g}, "
            f"fallback={self.fallback}",
            "",
            head,
            "| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: "
            "| ---: |" + (" --- |" if check else ""),
        ]
        for r in self.layers:
            ranks = " ".join(f"{i}:{n}" for i, n in r.ranks.items())
            row = (
                f"| {r.name} | {r.kind} | {r.matrix_shape[0]}x{r.matrix_shape[1]} | {r.a:.4g} "
                f"| {r.a_s} | {ranks} ({r.rank_bound}) | {r.storage} | {r.factor_bits} "
                f"| {r.saved_bits / r.weights:.3f} | {r.bits_per_weight:.3f} "
                f"| {r.max_error:.3g} | {r.rms_error:.3g} | {r.error_bound:.3g} |"
            )
            if check:
                verdict = (
                    "n/a" if r.two_conv is None else "pass" if r.two_conv["signed"] else "fail"
                )
                row += f" {verdict} |"
            lines.append(row)
        engaged = sum(r.factoring_engaged for r in self.layers)
        raised = sum((r.a_s or 0) > 0 for r in self.layers)
        lines += [
            "",
            f"Network: {self.bits_per_weight:.4f} bits/weight over {self.total_weights:,} "
            f"kernel weights in {len(self.layers)} layers (sign + dense planes + GF(2) factors; "
            f"{self.bits_per_weight_with_scales:.4f} with the per-layer floats m and a as "
            "float32).",
            f"Factoring: a factored plane of rank > 0 in {engaged} of {len(self.layers)} "
            f"layers, a_s > 0 in {raised}; it saves {self.saved_bits:,} bits "
            f"({self.saved_bits / self.total_weights:.4f} bits/weight) against storing all "
            f"J+1 planes densely.",
        ]
        return lines

    def _plain_table(self) -> list[str]:
        levels = 2 ** (self.bits - 1) - 1
        per = "layer" if self.granularity == "layer" else "output channel"
        lines = [
            f"{self.model_name}: plain per-{per.replace(' ', '-')} rounding with b={self.bits} "
            f"(integer levels -{levels}..{levels}, one float32 scale per {per})",
            "",
            "| layer | kind | kernel | scales | bits/w | with scales | max err | rms err "
            "| bound s/2 |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.layers:
            lines.append(
                f"| {r.name} | {r.kind} | {'x'.join(map(str, r.kernel_shape))} "
                f"| {r.scale_bits // 32} | {r.bits_per_weight:.3f} "
                f"| {r.bits_per_weight_with_scales:.3f} | {r.max_error:.3g} "
                f"| {r.rms_error:.3g} | {r.error_bound:.3g} |"
            )
        lines += [
            "",
            f"Network: {self.bits_per_weight:.4f} bits/weight over {self.total_weights:,} "
            f"kernel weights in {len(self.layers)} layers ({self.bits_per_weight_with_scales:.4f} "
            "with the float32 scales).",
        ]
        return lines

    def format_table(self) -> str:
        """The report as a Markdown table with a summary below it."""
        lines = self._cbd_table() if self.method == "cbd" else self._plain_table()
        lines.append(
            f"Kept in float32: {self.float_params:,} parameters (biases, normalisation, "
            "excluded layers)."
        )
        if self.excluded:
            lines.append("Excluded:")
            lines += [
                f"- {e.name} ({e.class_name}, {e.params:,} params): {e.reason}"
                for e in self.excluded
            ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _kind(layer) -> tuple[str | None, str]:
    """``("conv" | "dense", "")`` for a compressible layer, else ``(None, reason)``."""
    if isinstance(layer, _NORMALIZATION):
        return None, "normalisation layer: its scale and shift stay float32"
    quantizer = getattr(layer, "kernel_quantizer", None)
    if quantizer is not None:
        return None, f"kernel already quantized by {type(quantizer).__name__}"
    if isinstance(layer, _OTHER_CONVS):
        return None, "unsupported kernel layout (only Conv2D and Dense kernels are decomposed)"
    if isinstance(layer, tf.keras.layers.Conv2D):
        return "conv", ""
    if isinstance(layer, tf.keras.layers.Dense) and len(layer.kernel.shape) == 2:
        return "dense", ""
    return None, "no Conv2D or Dense kernel"


def compressible_layers(model: tf.keras.Model) -> list[tuple[str, str]]:
    """``(path, kind)`` of every layer whose kernel ``compress_model`` can decompose."""
    return [(path, kind) for path, layer in walk_layers(model) if (kind := _kind(layer)[0])]


def _select(
    model: tf.keras.Model,
    layers: Sequence[str] | Callable | None,
    exclude: Sequence[str],
) -> tuple[list[tuple[str, str, tf.keras.layers.Layer]], list[Exclusion]]:
    if isinstance(layers, str) or isinstance(exclude, str):
        raise ValueError(
            "Expected `layers` and `exclude` to be sequences of layer names or glob patterns, "
            f"but got a string: layers={layers!r}, exclude={exclude!r}."
        )
    entries = [(path, layer) for path, layer in walk_layers(model) if layer.weights]
    paths = [path for path, _ in entries]
    patterns = [] if layers is None or callable(layers) else list(layers)
    for pattern in [*patterns, *exclude]:
        if not fnmatch.filter(paths, pattern):
            raise ValueError(
                f"No layer with weights matches {pattern!r} in model {model.name!r}; "
                f"expected one of {paths}."
            )
    chosen, excluded = [], []
    for path, layer in entries:
        kind, reason = _kind(layer)
        params = _count(layer.weights)
        selected = (
            True
            if layers is None
            else layers(layer)
            if callable(layers)
            else any(fnmatch.fnmatchcase(path, p) for p in patterns)
        )
        if kind is None:
            if layers is not None and not callable(layers) and selected:
                raise ValueError(
                    f"Layer {path!r} ({type(layer).__name__}) was selected for compression but "
                    f"cannot be compressed: {reason}."
                )
            excluded.append(Exclusion(path, type(layer).__name__, reason, params))
        elif any(fnmatch.fnmatchcase(path, p) for p in exclude):
            excluded.append(Exclusion(path, type(layer).__name__, "excluded by name", params))
        elif not selected:
            excluded.append(Exclusion(path, type(layer).__name__, "not selected", params))
        else:
            chosen.append((path, kind, layer))
    return chosen, excluded


def _get_layer(model: tf.keras.Model, path: str) -> tf.keras.layers.Layer:
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def replace_kernels(model: tf.keras.Model, kernels: Mapping[str, np.ndarray]) -> tf.keras.Model:
    """A clone of ``model`` with the same weights except the given kernels.

    Args:
        model: a built functional or Sequential ``tf.keras.Model`` (left unchanged).
        kernels: ``{layer path: kernel}`` in the Keras layout.

    Returns:
        The new, uncompiled model.

    Raises:
        ValueError: for a subclassed or unbuilt model, an unknown layer or a shape mismatch.
    """
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; build it or give it an Input.")
    try:
        clone = tf.keras.models.clone_model(model)
    except ValueError as err:
        raise ValueError(
            f"Cannot clone model {model.name!r} ({type(model).__name__}); CBD needs a functional "
            f"or Sequential model: {err}"
        ) from err
    clone.set_weights(model.get_weights())
    for path, kernel in kernels.items():
        try:
            layer = _get_layer(clone, path)
        except ValueError as err:
            raise ValueError(f"Model {model.name!r} has no layer {path!r}.") from err
        if tuple(layer.kernel.shape) != tuple(kernel.shape):
            raise ValueError(
                f"Layer {path!r} has a kernel of shape {tuple(layer.kernel.shape)}, but the "
                f"replacement has shape {tuple(kernel.shape)}."
            )
        layer.kernel.assign(kernel)
    return clone


def _check_method_options(method, bits, bottleneck, fallback, check_two_conv, granularity=None):
    """Validated ``(bits, bottleneck, fallback, granularity)`` for ``method``; ValueError
    otherwise."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"Expected `method` to be one of {METHODS}, but got {method!r}.")
    if method == "plain":
        bits = _check_plain_bits(bits)
        granularity = _check_granularity("channel" if granularity is None else granularity)
        given = {
            name: value
            for name, value in (
                ("bottleneck", bottleneck),
                ("fallback", fallback),
                ("check_two_conv", check_two_conv or None),
            )
            if value is not None
        }
        if given:
            raise ValueError(
                f"{', '.join(f'`{k}`' for k in given)} "
                f"{'applies' if len(given) == 1 else 'apply'} to method='cbd' only, but got "
                f"{', '.join(f'{k}={v!r}' for k, v in given.items())} with method='plain'."
            )
        return bits, None, None, granularity
    if granularity is not None:
        raise ValueError(
            f"`granularity` applies to method='plain' only, but got granularity={granularity!r} "
            "with method='cbd' (CBD has one scale m per layer)."
        )
    bits = _check_bits(bits)
    if bottleneck is None:
        raise ValueError("Expected a `bottleneck` in (0, 1] for method='cbd', but got None.")
    bottleneck = _check_bottleneck(bottleneck)
    fallback = "layer" if fallback is None else fallback
    if fallback not in FALLBACKS:
        raise ValueError(f"Expected `fallback` to be one of {FALLBACKS}, but got {fallback!r}.")
    return bits, bottleneck, fallback, None


def _cbd_layer_report(path, kind, layer, cbd: LayerCBD, bottleneck, check_two_conv):
    g = cbd.grid
    h, w = cbd.shape
    factored = tuple(p.exponent for p in cbd.planes if p.factored)
    storage = {p.factored for p in cbd.planes if p.exponent >= 0}
    two_conv = None
    if check_two_conv:
        from melius_larq.cbd.exactness import layer_integer_exactness

        two_conv = layer_integer_exactness(cbd)
    return LayerReport(
        name=path,
        kind=kind,
        kernel_shape=tuple(int(d) for d in cbd.kernel_shape),
        matrix_shape=cbd.shape,
        bits=cbd.bits,
        a=cbd.a,
        a_s=g["a_s"],
        a_i=g["a_i"],
        rank_bound=int(np.floor(bottleneck * min(cbd.shape))),
        ranks=cbd.ranks(),
        storage="mixed" if len(storage) == 2 else "factored" if True in storage else "dense",
        weights=cbd.size,
        payload_bits=cbd.payload_bits(),
        max_error=cbd.error["max"],
        rms_error=cbd.error["rms"],
        error_bound=cbd.bound,
        bias_params=_count(layer.weights) - cbd.size,
        two_conv=two_conv,
        method="cbd",
        scale_bits=CBD_SCALE_BITS,
        dense_bits=cbd.size * (cbd.bits + 1),
        factor_bits=sum(p.rank * (h + w) for p in cbd.planes if p.factored),
        factored_planes=factored,
    )


def _plain_layer_report(path, kind, layer, plain: PlainLayer):
    matrix_shape = (
        (
            plain.kernel_shape[3] * plain.kernel_shape[0],
            plain.kernel_shape[2] * plain.kernel_shape[1],
        )
        if len(plain.kernel_shape) == 4
        else (plain.kernel_shape[1], plain.kernel_shape[0])
    )
    return LayerReport(
        name=path,
        kind=kind,
        kernel_shape=plain.kernel_shape,
        matrix_shape=matrix_shape,
        bits=plain.bits,
        a=None,
        a_s=None,
        a_i=None,
        rank_bound=None,
        ranks={},
        storage="dense",
        weights=plain.size,
        payload_bits=plain.payload_bits(),
        max_error=plain.error["max"],
        rms_error=plain.error["rms"],
        error_bound=plain.bound,
        bias_params=_count(layer.weights) - plain.size,
        method="plain",
        scale_bits=plain.scale_bits(),
        dense_bits=plain.payload_bits(),
    )


def compress_model(
    model: tf.keras.Model,
    *,
    bits: int,
    bottleneck: float | None = None,
    method: str = "cbd",
    layers: Sequence[str] | Callable[[tf.keras.layers.Layer], bool] | None = None,
    exclude: Sequence[str] = (),
    fallback: str | None = None,
    check_two_conv: bool = False,
    granularity: str | None = None,
) -> tuple[tf.keras.Model, CompressionReport]:
    """Compresses the Conv2D and Dense kernels of a model with CBD (or the plain baseline).

    With ``method="cbd"`` each kernel is matricized (Conv2D ``(kh, kw, cin, cout) ->
    (cout kh, cin kw)``, Dense transposed), composed into a sign plane and J magnitude planes
    with a scale ``a`` found by binary search from ``bottleneck``, and its planes ``i >= 0``
    are factored exactly over GF(2). With ``method="plain"`` each kernel is rounded to b-bit
    integers ``-(2^(b-1) - 1) .. 2^(b-1) - 1`` with one float32 scale ``max|W_c| /
    (2^(b-1) - 1)`` per output channel (:mod:`melius_larq.cbd.plain`): b-bit plain rounding
    has the levels and the dense storage cost of CBD with ``J = b - 1``. Normalisation layers,
    biases, kernels already quantized (larq) and other layer types are left in float32 and
    listed in ``report.excluded``; both methods select the same layers.

    Bits are accounted the same way for both: ``report.bits_per_weight`` counts the stored
    codes (CBD: sign, dense planes and factors; plain: b bits per weight), and
    ``report.bits_per_weight_with_scales`` adds each layer's float32 constants (CBD: ``m``
    and ``a``, 64 bits per layer; plain: 32 bits per output channel).

    Example:
        >>> small, report = compress_model(model, bits=6, bottleneck=0.2)  # doctest: +SKIP
        >>> base, plain = compress_model(model, bits=7, method="plain")  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP

    Args:
        model: a built functional or Sequential ``tf.keras.Model``; not modified.
        bits: for ``"cbd"``, J, magnitude planes per weight, 1..8 (the sign is one more
            plane); for ``"plain"``, b, bits per weight including the sign, 2..8.
        bottleneck: rank budget of the high planes as a fraction of ``min(h, w)``, in (0, 1];
            required for ``"cbd"``, not accepted for ``"plain"``.
        method: ``"cbd"`` (default) or ``"plain"``.
        layers: glob patterns of the layer paths to compress (a selected layer that cannot be
            compressed is an error), or a predicate on layers; None selects every Conv2D and
            Dense layer.
        exclude: glob patterns of layer paths to leave uncompressed.
        fallback: ``"layer"`` (the paper's all-dense fallback when the factors cost more than
            one dense plane; the default for ``"cbd"``) or ``"plane"`` (each high plane stored
            the cheaper way). CBD only.
        check_two_conv: also run the integer-exactness check of
            :func:`~melius_larq.cbd.exactness.layer_integer_exactness` on every layer. CBD
            only.
        granularity: the plain scales: ``"channel"`` (default, one per output channel) or
            ``"layer"`` (one per kernel, CBD's own granularity: comparing CBD with it isolates
            what the GF(2) factoring adds). Plain only.

    Returns:
        ``(new_model, report)``.

    Raises:
        ValueError: for an unknown ``method`` or ``granularity``, ``bits`` outside 1..8 (CBD)
            or 2..8 (plain),
            a missing or out-of-range ``bottleneck`` for CBD, CBD-only options given with
            ``method="plain"``, an unknown ``fallback``, a pattern that matches no layer,
            non-finite weights (naming the layer), or a model with nothing to compress.
    """
    bits, bottleneck, fallback, granularity = _check_method_options(
        method, bits, bottleneck, fallback, check_two_conv, granularity
    )
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"Expected a tf.keras.Model, but got {type(model).__name__}.")
    chosen, excluded = _select(model, layers, exclude)
    if not chosen:
        listed = "; ".join(f"{e.name}: {e.reason}" for e in excluded) or "no layer has weights"
        raise ValueError(
            f"Nothing to compress in model {model.name!r}: expected at least one Conv2D or "
            f"Dense kernel, but found none eligible ({listed})."
        )
    for path, _, layer in chosen:
        kernel = layer.kernel.numpy()
        if not np.all(np.isfinite(kernel)):
            bad = int(np.count_nonzero(~np.isfinite(kernel)))
            raise ValueError(
                f"Layer {path!r} has {bad} non-finite kernel weight(s) (NaN or inf); expected "
                "finite weights."
            )

    decompositions: dict[str, LayerCBD | PlainLayer] = {}
    reports = []
    for path, kind, layer in chosen:
        kernel = layer.kernel.numpy()
        if method == "plain":
            plain = quantize_kernel_plain(kernel, bits, name=path, granularity=granularity)
            decompositions[path] = plain
            reports.append(_plain_layer_report(path, kind, layer, plain))
        else:
            cbd = decompose_kernel(
                kernel, bits, bottleneck=bottleneck, fallback=fallback, name=path
            )
            decompositions[path] = cbd
            reports.append(_cbd_layer_report(path, kind, layer, cbd, bottleneck, check_two_conv))
    new_model = replace_kernels(model, {path: d.kernel() for path, d in decompositions.items()})
    report = CompressionReport(
        model_name=model.name,
        bits=bits,
        bottleneck=bottleneck,
        fallback=fallback,
        layers=tuple(reports),
        excluded=tuple(excluded),
        float_params=sum(r.bias_params for r in reports) + sum(e.params for e in excluded),
        decompositions=decompositions,
        method=method,
        granularity=granularity,
    )
    return new_model, report
