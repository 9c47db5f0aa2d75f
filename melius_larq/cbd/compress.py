"""``compress_model``: the CBD model-to-model transform and its report.

The transform follows tfmot's ``quantize_model``: it returns a **new** model (a
``tf.keras.models.clone_model`` copy with the same weights, uncompiled, without optimizer
state) whose Conv2D and Dense kernels are replaced by their CBD reconstructions
``W_hat = m S sum_i c 2^i B_i``; the input model is not modified. Biases, normalisation layers
and excluded layers keep their float32 values and are listed in the report.

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

__all__ = [
    "CompressionReport",
    "Exclusion",
    "LayerReport",
    "compress_model",
    "compressible_layers",
    "replace_kernels",
]

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
        matrix_shape: ``(h, w)`` of the CBD matrix.
        bits: J.
        a: the scale; ``a_s`` and ``a_i`` the top and bottom plane exponents.
        rank_bound: ``floor(bottleneck * min(h, w))``, the search's budget for ``rank(R > a)``.
        ranks: ``{i: r_i}`` GF(2) ranks of the planes ``i >= 0``.
        storage: ``"factored"``, ``"dense"`` (fallback) or ``"mixed"`` (per-plane fallback).
        weights: kernel size ``h w``; ``payload_bits`` the stored bits.
        max_error, rms_error: of ``W - W_hat``; ``error_bound`` is ``m D``.
        bias_params: float32 bias parameters of the layer (not compressed).
        two_conv: result of the optional integer-exactness check, else None.
    """

    name: str
    kind: str
    kernel_shape: tuple[int, ...]
    matrix_shape: tuple[int, int]
    bits: int
    a: float
    a_s: int
    a_i: int
    rank_bound: int
    ranks: dict[int, int]
    storage: str
    weights: int
    payload_bits: int
    max_error: float
    rms_error: float
    error_bound: float
    bias_params: int
    two_conv: dict | None = None

    @property
    def bits_per_weight(self) -> float:
        return self.payload_bits / self.weights

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["kernel_shape"] = list(self.kernel_shape)
        out["matrix_shape"] = list(self.matrix_shape)
        out["ranks"] = {str(i): r for i, r in self.ranks.items()}
        out["bits_per_weight"] = self.bits_per_weight
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
    compressed layer (planes and factors), used by ``save_cbd`` and ``export_tflite``.

    Attributes:
        model_name: name of the input model.
        bits: J.
        bottleneck: the ratio used by the scale search.
        fallback: ``"layer"`` or ``"plane"``.
        layers: one :class:`LayerReport` per compressed kernel, in model order.
        excluded: one :class:`Exclusion` per layer with weights that was left alone.
        float_params: parameters kept in float32 (biases, normalisation, excluded layers).
    """

    model_name: str
    bits: int
    bottleneck: float
    fallback: str
    layers: tuple[LayerReport, ...]
    excluded: tuple[Exclusion, ...]
    float_params: int
    decompositions: Mapping[str, LayerCBD] = dataclasses.field(repr=False, compare=False)

    @property
    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def total_bits(self) -> int:
        return sum(layer.payload_bits for layer in self.layers)

    @property
    def bits_per_weight(self) -> float:
        """Network bits/weight: stored bits over weights of the compressed kernels only."""
        return self.total_bits / self.total_weights

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "bits": self.bits,
            "bottleneck": self.bottleneck,
            "fallback": self.fallback,
            "bits_per_weight": self.bits_per_weight,
            "total_weights": self.total_weights,
            "total_bits": self.total_bits,
            "float_params": self.float_params,
            "layers": [layer.to_dict() for layer in self.layers],
            "excluded": [dataclasses.asdict(e) for e in self.excluded],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self) -> str:
        """The report as a Markdown table with a summary below it."""
        check = any(layer.two_conv is not None for layer in self.layers)
        head = (
            "| layer | kind | matrix | a | a_s | ranks i>=0 (budget) | storage | bits/w "
            "| max err | rms err | bound mD |" + (" two-conv |" if check else "")
        )
        lines = [
            f"{self.model_name}: CBD with J={self.bits}, bottleneck={self.bottleneck:g}, "
            f"fallback={self.fallback}",
            "",
            head,
            "| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |"
            + (" --- |" if check else ""),
        ]
        for r in self.layers:
            ranks = " ".join(f"{i}:{n}" for i, n in r.ranks.items())
            row = (
                f"| {r.name} | {r.kind} | {r.matrix_shape[0]}x{r.matrix_shape[1]} | {r.a:.4g} "
                f"| {r.a_s} | {ranks} ({r.rank_bound}) | {r.storage} | {r.bits_per_weight:.3f} "
                f"| {r.max_error:.3g} | {r.rms_error:.3g} | {r.error_bound:.3g} |"
            )
            if check:
                verdict = (
                    "n/a" if r.two_conv is None else "pass" if r.two_conv["signed"] else "fail"
                )
                row += f" {verdict} |"
            lines.append(row)
        lines += [
            "",
            f"Network: {self.bits_per_weight:.4f} bits/weight over {self.total_weights:,} "
            f"kernel weights in {len(self.layers)} layers (sign + dense planes + GF(2) factors; "
            "the per-layer floats m and a are not counted).",
            f"Kept in float32: {self.float_params:,} parameters (biases, normalisation, "
            "excluded layers).",
        ]
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


def compress_model(
    model: tf.keras.Model,
    *,
    bits: int,
    bottleneck: float,
    layers: Sequence[str] | Callable[[tf.keras.layers.Layer], bool] | None = None,
    exclude: Sequence[str] = (),
    fallback: str = "layer",
    check_two_conv: bool = False,
) -> tuple[tf.keras.Model, CompressionReport]:
    """Compresses the Conv2D and Dense kernels of a model with CBD.

    Each kernel is matricized (Conv2D ``(kh, kw, cin, cout) -> (cout kh, cin kw)``, Dense
    transposed), composed into a sign plane and J magnitude planes with a scale ``a`` found by
    binary search from ``bottleneck``, and its planes ``i >= 0`` are factored exactly over
    GF(2). Normalisation layers, biases, kernels already quantized (larq) and other layer types
    are left in float32 and listed in ``report.excluded``.

    Example:
        >>> small, report = compress_model(model, bits=6, bottleneck=0.2)  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP

    Args:
        model: a built functional or Sequential ``tf.keras.Model``; not modified.
        bits: J, magnitude planes per weight, 1..8 (the sign is one more plane).
        bottleneck: rank budget of the high planes as a fraction of ``min(h, w)``, in (0, 1].
        layers: glob patterns of the layer paths to compress (a selected layer that cannot be
            compressed is an error), or a predicate on layers; None selects every Conv2D and
            Dense layer.
        exclude: glob patterns of layer paths to leave uncompressed.
        fallback: ``"layer"`` (the paper's all-dense fallback when the factors cost more than
            one dense plane) or ``"plane"`` (each high plane stored the cheaper way).
        check_two_conv: also run the integer-exactness check of
            :func:`~melius_larq.cbd.exactness.layer_integer_exactness` on every layer.

    Returns:
        ``(new_model, report)``.

    Raises:
        ValueError: for ``bits`` outside 1..8, ``bottleneck`` outside (0, 1], an unknown
            ``fallback``, a pattern that matches no layer, non-finite weights (naming the
            layer), or a model with nothing to compress.
    """
    bits = _check_bits(bits)
    bottleneck = _check_bottleneck(bottleneck)
    if fallback not in FALLBACKS:
        raise ValueError(f"Expected `fallback` to be one of {FALLBACKS}, but got {fallback!r}.")
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

    if check_two_conv:
        from melius_larq.cbd.exactness import layer_integer_exactness

    decompositions: dict[str, LayerCBD] = {}
    reports = []
    bias_total = 0
    for path, kind, layer in chosen:
        cbd = decompose_kernel(
            layer.kernel.numpy(), bits, bottleneck=bottleneck, fallback=fallback, name=path
        )
        decompositions[path] = cbd
        storage = {p.factored for p in cbd.planes if p.exponent >= 0}
        bias = _count(layer.weights) - int(np.prod(layer.kernel.shape))
        bias_total += bias
        g = cbd.grid
        reports.append(
            LayerReport(
                name=path,
                kind=kind,
                kernel_shape=tuple(int(d) for d in cbd.kernel_shape),
                matrix_shape=cbd.shape,
                bits=bits,
                a=cbd.a,
                a_s=g["a_s"],
                a_i=g["a_i"],
                rank_bound=int(np.floor(bottleneck * min(cbd.shape))),
                ranks=cbd.ranks(),
                storage="mixed"
                if len(storage) == 2
                else "factored"
                if True in storage
                else "dense",
                weights=cbd.size,
                payload_bits=cbd.payload_bits(),
                max_error=cbd.error["max"],
                rms_error=cbd.error["rms"],
                error_bound=cbd.bound,
                bias_params=bias,
                two_conv=layer_integer_exactness(cbd) if check_two_conv else None,
            )
        )
    new_model = replace_kernels(model, {path: cbd.kernel() for path, cbd in decompositions.items()})
    report = CompressionReport(
        model_name=model.name,
        bits=bits,
        bottleneck=bottleneck,
        fallback=fallback,
        layers=tuple(reports),
        excluded=tuple(excluded),
        float_params=bias_total + sum(e.params for e in excluded),
        decompositions=decompositions,
    )
    return new_model, report
