"""melius_larq.summary reproduces the authors' accounting (spec meliusnet.md section 5)."""

import pytest
from conftest import registry_params

import melius_larq

# Spec section 5 at 224x224: (paper total, binary, Keras total, MiB, BOPs, FLOPs, OPS) for the
# stem each row was logged or derived with.
SPEC = {
    ("MeliusNet22", "imagenet"): (6_948_392, 6_119_424, 6_973_352, 3.89, 4.624e9, 1.852e8, 2.575e8),
    ("MeliusNet22", "grouped"): (6_944_584, 6_119_424, 6_969_672, 3.88, 4.624e9, 1.359e8, 2.081e8),
    ("MeliusNet29", "imagenet"): (11_332_136, 10_321_920, 11_372_456, 5.08, 5.470e9, 1.782e8, 2.637e8),
    ("MeliusNet29", "grouped"): (11_328_328, 10_321_920, 11_368_776, 5.07, 5.470e9, 1.289e8, 2.143e8),
    ("MeliusNet42", "imagenet"): (26_829_352, 24_956_928, 26_922_664, 10.12, 9.693e9, 2.234e8, 3.748e8),
    ("MeliusNet42", "grouped"): (26_825_544, 24_956_928, 26_918_984, 10.10, 9.693e9, 1.740e8, 3.255e8),
    ("MeliusNet59", "imagenet"): (55_559_144, 52_641_792, 55_751_208, 17.40, 18.316e9, 2.951e8, 5.813e8),
    ("MeliusNet59", "grouped"): (55_555_336, 52_641_792, 55_747_528, 17.39, 18.316e9, 2.458e8, 5.320e8),
    ("MeliusNetA", "grouped"): (9_238_984, 8_441_856, 9_272_648, 4.05, 4.852e9, 0.867e8, 1.625e8),
    ("MeliusNetB", "grouped"): (12_239_176, 11_280_384, 12_283_208, 5.00, 5.722e9, 1.064e8, 1.958e8),
    ("MeliusNetC", "grouped"): (12_240_264, 11_427_840, 12_284_616, 4.46, 4.353e9, 0.822e8, 1.502e8),
    ("MeliusNet23", "grouped"): (8_187_784, 7_446_528, 8_217_544, 3.72, 2.532e9, 0.739e8, 1.134e8),
    ("BinaryDenseNet28", "imagenet"): (5_131_496, 4_202_496, 5_150_504, 4.04, 3.587e9, 2.019e8, 2.580e8),
    ("BinaryDenseNet37", "imagenet"): (8_702_248, 7_593_984, 8_734_120, 5.13, 4.507e9, 1.991e8, 2.695e8),
    ("BinaryDenseNet45", "imagenet"): (13_889_512, 12_349_440, 13_939_240, 7.35, 6.431e9, 2.433e8, 3.438e8),
}  # fmt: skip
# Spec rule for the other stem: the 7x7 stem has 3,808 more paper parameters (3,680 more in
# Keras' count) and 0.494e8 more FLOPs than the grouped stem.
STEM_PARAMS, STEM_KERAS_PARAMS, STEM_FLOPS = 3_808, 3_680, 0.494e8

# The spec prints BOPs/FLOPs/OPS to 4 significant digits (3 for some FLOPs rows): compare to
# half a unit of the last printed digit, i.e. a relative 1e-3.
PRINTED_DIGITS_RTOL = 1e-3


def _counting_rule(name, stem):
    """Spec section 5's counting rule, written out independently of the Keras model."""
    spec = melius_larq.get_model_spec(name)
    k, w = spec.growth_rate, spec.stem_features
    half = w // 2
    total = binary = bops = flops = 0
    if stem == "grouped":
        convs = (3 * half * 9, half * half * 9 // 4, half * w * 9 // 8)
        total += sum(convs) + 2 * (half + half + w)
        flops += 112 * 112 * sum(convs)
    else:
        total += 3 * w * 49 + 2 * w
        flops += 112 * 112 * 3 * w * 49
    c = w
    for i, (res, blocks) in enumerate(zip((56, 28, 14, 7), spec.blocks, strict=True)):
        for _ in range(blocks):
            convs = [9 * c * k] + ([9 * (c + k) * k] if spec.family == "meliusnet" else [])
            total += sum(convs) + 2 * c + (2 * (c + k) if spec.family == "meliusnet" else 0)
            binary += sum(convs)
            bops += res * res * sum(convs)
            c += k
        if i < 3:
            out = spec.transition_features[i]
            weights = c * out // spec.transition_groups
            total += 2 * c + weights
            flops += (res // 2) ** 2 * weights
            c = out
    total += 2 * c + (c + 1) * 1000
    keras = None  # the spec gives Keras totals only for its own rows
    mib = ((total - binary) * 4 + binary / 8) / 2**20
    return total, binary, keras, mib, bops, flops, bops / 64 + flops


def _expected(name, stem):
    if not any(key[0] == name for key in SPEC):
        return _counting_rule(name, stem)
    if (name, stem) in SPEC:
        return SPEC[(name, stem)]
    sign = 1 if stem == "imagenet" else -1
    other = "grouped" if stem == "imagenet" else "imagenet"
    total, binary, keras, _, bops, flops, ops = SPEC[(name, other)]
    total += sign * STEM_PARAMS
    mib = ((total - binary) * 4 + binary / 8) / 2**20
    return (total, binary, keras + sign * STEM_KERAS_PARAMS, mib, bops,
            flops + sign * STEM_FLOPS, ops + sign * STEM_FLOPS)  # fmt: skip


@pytest.mark.parametrize("stem", ["grouped", "imagenet"])
@pytest.mark.parametrize("name", registry_params(melius_larq.list_models()))
def test_accounting_reproduces_the_spec_at_224(name, stem):
    """Spec section 5 numbers; variants the spec does not list use its counting rule."""
    total, binary, keras, mib, bops, flops, ops = _expected(name, stem)
    counts = melius_larq.summary(melius_larq.create_model(name, stem=stem), print_fn=None)
    assert counts["total_params"] == total
    assert counts["binary_params"] == binary
    if any(key[0] == name for key in SPEC):
        assert counts["keras_params"] == keras
    assert round(counts["size_mib"], 2) == round(mib, 2)
    assert counts["bops"] == pytest.approx(bops, rel=PRINTED_DIGITS_RTOL)
    assert counts["flops"] == pytest.approx(flops, rel=PRINTED_DIGITS_RTOL)
    assert counts["ops"] == pytest.approx(ops, rel=PRINTED_DIGITS_RTOL)
    assert set(counts) >= {"total_params", "binary_params", "size_mib", "bops", "flops", "ops"}


def test_summary_prints_a_table():
    lines = []
    counts = melius_larq.summary(melius_larq.MeliusNet22(), print_fn=lines.append)
    table = "\n".join(lines)
    assert "| **total** | **6,944,584** | **6,119,424** |" in table
    assert "Size: 3.88 MiB" in table and "2.081e+08" in table
    for part in ("stem", "section 0 blocks", "section 0 transition", "section 3 blocks", "head"):
        assert f"| {part} |" in table
    assert counts["total_params"] == 6_944_584


def test_binary_counts_need_binary_inputs_and_kernels():
    """A conv with a binary kernel but float input stores 1-bit weights but does FLOPs."""
    import larq as lq

    from melius_larq._compat import tf

    x = tf.keras.Input((8, 8, 32))
    y = lq.layers.QuantConv2D(
        32, 3, padding="same", use_bias=False, kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )(x)  # fmt: skip
    counts = melius_larq.summary(tf.keras.Model(x, y), print_fn=None)
    assert counts["binary_params"] == 9 * 32 * 32
    assert counts["bops"] == 0 and counts["flops"] == 64 * 9 * 32 * 32


def test_counting_rule_agrees_with_the_spec_rows():
    """The written-out rule reproduces the spec's rows, so it is fit to check other variants."""
    for (name, stem), row in SPEC.items():
        got = _counting_rule(name, stem)
        assert got[:2] == row[:2], name
        assert got[4] == pytest.approx(row[4], rel=PRINTED_DIGITS_RTOL), name
        assert got[5] == pytest.approx(row[5], rel=PRINTED_DIGITS_RTOL), name
