"""The networks of the comparison: MeliusNetTiny's 28x28 siblings, the names and widths
compared, and the paper's size and operation counts of each deployment."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from melius_larq.models import VARIANTS, VariantSpec
from melius_larq.registry import register_models

# MeliusNetTiny's narrower and wider siblings for 28x28 inputs (small stem). Like the paper's
# 22/29/42/59 ladder they differ in blocks per stage and transition widths; the growth rate
# stays a multiple of 32 so that LCE bit-packs every binary conv's output into whole words.
# Channels: C_in of a transition = previous C_out + growth x blocks (MeliusNetTiny: 32 + 2 x 32
# = 96 -> 64, 64 + 64 = 128 -> 96, 96 + 64 = 160 -> 128, final 128 + 32 = 160).
SIBLINGS: dict[str, VariantSpec] = {
    s.name: s
    for s in (
        # one block per stage: 64 -> 32, 64 -> 64, 96 -> 96, final 128 channels
        VariantSpec("MeliusNetTinyNarrow", "meliusnet", (1, 1, 1, 1), (32, 64, 96),
                    growth_rate=32, stem_features=32, pool_padding="same"),
        # the paper's growth rate 64: 192 -> 128, 320 -> 192, 384 -> 256, final 384 channels
        VariantSpec("MeliusNetTinyWide", "meliusnet", (2, 3, 3, 2), (128, 192, 256),
                    growth_rate=64, stem_features=64, pool_padding="same"),
    )
}  # fmt: skip
DEFAULT_NETWORKS = ("MeliusNetTinyNarrow", "MeliusNetTiny", "MeliusNetTinyWide")
# Widths whose sizes bracket the binary networks' (0.09-1.1 MiB by the paper's accounting):
# MobileNet-v1 0.125 / 0.25 / 0.5 span about 0.23-3.2 MiB; 1.0 (about 12 MiB) would leave all
# but the widest binary network outside the MobileNet curve, where nothing is compared.
DEFAULT_WIDTHS = (0.125, 0.25, 0.5)
FAMILIES = {
    "binary": "MeliusNet (binary, LCE)",
    "float": "MobileNet-v1 (float, TFLite XNNPACK)",
    "int8": "MobileNet-v1 (int8, TFLite XNNPACK)",
}
_BITS = {"binary": 32, "float": 32, "int8": 8}  # bits per non-binary parameter


# Networks -----------------------------------------------------------------------------------
def create_sibling(
    name: str,
    *,
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    stem: str = "small",
    **kwargs,
):
    """Builds one of the 28x28 siblings of ``MeliusNetTiny`` (:data:`SIBLINGS`).

    Args:
        name: ``"MeliusNetTinyNarrow"`` or ``"MeliusNetTinyWide"``.
        input_shape: ``(height, width, channels)``.
        num_classes: classifier outputs.
        stem: the stem (``"small"``: a 3x3 conv, BN, ReLU and a 2x2 max-pool).
        **kwargs: the other keyword arguments of the registry builders (``preset``,
            ``classifier_activation``, ``binarization``, ...).

    Returns:
        A ``tf.keras.Model``.

    Raises:
        ValueError: for an unknown name, or a bad argument of the builder.
    """
    from melius_larq.models import build_model

    if name not in SIBLINGS:
        raise ValueError(
            f"Unknown sibling network {name!r}; expected one of: {', '.join(SIBLINGS)}."
        )
    return build_model(SIBLINGS[name], input_shape=input_shape, num_classes=num_classes,
                       stem=stem, **kwargs)  # fmt: skip


# The siblings are trainable by name in recipes; as the "experiment" family they stay out of
# list_models() and the registry-wide tests.
register_models({name: functools.partial(create_sibling, name) for name in SIBLINGS},
                family="experiment")  # fmt: skip


def _binary_names() -> list[str]:
    family = [n for n, s in VARIANTS.items() if s.family == "meliusnet"]
    return [*SIBLINGS, *family]


def check_networks(networks: Sequence[str], widths: Sequence[float]) -> None:
    """Checks the network names and MobileNet widths before anything is trained.

    Raises:
        ValueError: naming an unknown network, a bad width, or a duplicate.
    """
    known = _binary_names()
    for name in networks:
        if name not in known:
            raise ValueError(
                f"Unknown MeliusNet network {name!r}; expected one of: {', '.join(known)}."
            )
    for width in widths:
        if (
            isinstance(width, bool)
            or not isinstance(width, (int, float))
            or not (math.isfinite(width) and 0 < width <= 4)
        ):
            raise ValueError(f"MobileNet width {width!r} must be a number in (0, 4].")
    for kind, values in (("network", list(networks)), ("width", list(widths))):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"The {kind} {repeated[0]} is listed twice.")
    if not networks and not widths:
        raise ValueError("Nothing to compare: no networks and no widths.")


def compared_networks(networks, widths) -> list[dict]:
    out = [{"name": n, "kind": "binary", "slug": n.lower()} for n in networks]
    out += [
        {"name": f"MobileNetV1-{w:g}", "kind": "float", "width": float(w),
         "slug": f"mobilenetv1_{w:g}"}
        for w in widths
    ]  # fmt: skip
    return out


# Accounting ---------------------------------------------------------------------------------
def network_accounting(model, *, kind: str = "binary") -> dict:
    """The paper's size and operation counts of a model, for one of its deployments.

    ``kind`` is ``"binary"`` or ``"float"`` (non-binary parameters at 32 bit, the paper's rule)
    or ``"int8"`` (the same network with its parameters stored at 8 bit). OPS are the paper's
    BOPs/64 + FLOPs, with an int8 multiply-accumulate counted as one FLOP.

    Returns:
        ``{"params", "binary_params", "bops", "flops", "ops", "size_mib_paper"}``.
    """
    import melius_larq

    if kind not in _BITS:
        raise ValueError(f"Unknown deployment {kind!r}; expected one of: {', '.join(_BITS)}.")
    counts = melius_larq.summary(model, print_fn=None)
    other = counts["total_params"] - counts["binary_params"]
    return {
        "params": counts["total_params"],
        "binary_params": counts["binary_params"],
        "bops": counts["bops"],
        "flops": counts["flops"],
        "ops": counts["ops"],
        "size_mib_paper": (other * _BITS[kind] + counts["binary_params"]) / 8 / 2**20,
    }
