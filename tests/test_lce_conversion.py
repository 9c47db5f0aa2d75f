"""Every registry model converts with LCE into one LceBconv2d per binary conv and matches Keras."""

import numpy as np
import pytest
from conftest import (
    SMALL_CLASSES,
    SMALL_SHAPE,
    convert_cached,
    registry_params,
    require,
    small_model,
    trained_like,
)

import melius_larq
from melius_larq._compat import tf
from melius_larq.deploy import convert_model, op_inventory

lce = require("larq_compute_engine")

# LCE folds each BatchNorm into a multiply-add and accumulates binary dot products exactly,
# so Keras and LCE differ only by float32 re-association across ~40-110 layers: about 1e-6
# relative to the largest logit (measured with trained-like BatchNorm statistics). 1e-4 keeps
# two orders of magnitude of headroom while still failing on any real mismatch (a wrong
# padding or a lost BatchNorm shift moves logits by several percent of their scale).
LCE_LOGIT_RTOL = 1e-4


def _float_convs(model):
    """CONV_2D ops expected: one per group of every float conv (GroupConv2D is split)."""
    return sum(
        layer.groups
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.Conv2D) and "binconv" not in layer.name
    )


# every model in CI (make test-all), the representative ones in make test (conftest.registry_params)
@pytest.mark.parametrize("name", registry_params(melius_larq.list_models()))
def test_converts_to_one_bconv_per_binary_layer_and_matches_keras(name):
    model = small_model(name)  # trained-like BatchNorm statistics
    buf = convert_cached(model)
    ops = op_inventory(buf)
    binary = sum("binconv" in layer.name for layer in model.layers)
    assert ops.get("LceBconv2d", 0) == binary
    assert ops.get("LceQuantize", 0) == binary  # one sign per binary conv, no extra ones
    # float CONV_2D only for the float convs (stem, transitions): none stands in for a binary one
    assert ops.get("CONV_2D", 0) == _float_convs(model)
    assert "LceDequantize" not in ops

    x = np.random.RandomState(0).uniform(-1, 1, (3, *SMALL_SHAPE)).astype(np.float32)
    expected = model(x, training=False).numpy()
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(got, expected, atol=LCE_LOGIT_RTOL * scale, rtol=0)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


# BNN+ multiplies each binary conv output by alpha. LCE fuses that product into the conv's
# output transform and rounds it differently from Keras (conv, then multiply); a pre-sign value
# within ~1e-5 of zero can then take the other sign in one runtime, which moves the logits by
# 2 alpha per affected output and grows with depth (measured: up to 25 % of the logit scale on
# 2-4 of 16 random inputs for MeliusNetA/C with alpha drawn in [0.01, 0.1], while float32
# Keras agrees with float64 Keras to 6e-7). With alpha a power of two the products are exact
# in both runtimes, so any remaining difference is a conversion error: a constant on the
# wrong channel or applied twice moves logits by far more than LCE_LOGIT_RTOL.
# Three weight draws and every model in CI (make test-all); make test runs the first draw on
# MeliusNetTiny: BNN+ replaces the binary convs the same way in every family, whose own
# conversion paths the test above covers.
BNN_PLUS_CASES = [
    (name, seed)
    if (name, seed) == ("MeliusNetTiny", 0)
    else pytest.param(name, seed, marks=pytest.mark.large)
    for name in melius_larq.list_models()
    for seed in (0, 1, 2)
]


@pytest.mark.parametrize(("name", "seed"), BNN_PLUS_CASES)
def test_bnn_plus_model_matches_keras_with_exact_alpha(name, seed):
    tf.keras.utils.set_random_seed(seed)
    model = melius_larq.create_model(name, input_shape=SMALL_SHAPE, num_classes=SMALL_CLASSES,
                                     classifier_activation=None, binarization="bnn+")  # fmt: skip
    trained_like(model, seed=seed)
    rng = np.random.RandomState(seed)
    alphas = [layer.alpha for layer in model.layers if hasattr(layer, "alpha")]
    assert len(alphas) == sum("binconv" in layer.name for layer in model.layers)
    for alpha in alphas:
        alpha.assign(2.0 ** -rng.randint(1, 7, alpha.shape))
    buf = convert_model(model)
    assert op_inventory(buf).get("LceBconv2d", 0) == len(alphas)
    x = np.random.RandomState(seed).uniform(-1, 1, (3, *SMALL_SHAPE)).astype(np.float32)
    expected = model(x, training=False).numpy()
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    atol = LCE_LOGIT_RTOL * np.abs(expected).max()
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


@pytest.mark.parametrize("size", [32, 33, pytest.param(40, marks=pytest.mark.large)])
def test_symmetric_stem_survives_lce_pad_fusion(size):
    """LCE rewrites PAD+stride-2 VALID conv into SAME whenever the pads look symmetric;
    the stem must still compute MXNet's symmetric padding after conversion."""
    model = melius_larq.MeliusNet22(input_shape=(size, size, 3), include_top=False)
    sub = tf.keras.Model(model.input, model.get_layer("stem_pool").output)
    buf = convert_model(sub)
    x = np.random.RandomState(size).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    np.testing.assert_allclose(got, sub(x, training=False), atol=1e-5)


@pytest.mark.large
def test_full_size_meliusnet22_matches_keras():
    """The paper's network at 224x224 with trained-like statistics, as users deploy it."""
    tf.keras.utils.set_random_seed(0)
    model = trained_like(
        melius_larq.MeliusNet22(classifier_activation=None), seed=1
    )  # 1000 ImageNet classes
    buf = convert_model(model)
    ops = op_inventory(buf)
    assert ops["LceBconv2d"] == sum("binconv" in layer.name for layer in model.layers) == 34
    x = np.random.RandomState(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    expected = model(x, training=False).numpy()
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    np.testing.assert_allclose(got, expected, atol=LCE_LOGIT_RTOL * np.abs(expected).max(), rtol=0)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
