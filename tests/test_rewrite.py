"""LCE's optimized kernels and zero-padded binary convs on maps smaller than the kernel."""

import warnings

import larq as lq
import numpy as np
import pytest
from conftest import require, trained_like

import melius_larq
from melius_larq._compat import tf
from melius_larq.deploy import convert_model, op_inventory
from melius_larq.deploy.report import conversion_report
from melius_larq.deploy.rewrite import (
    binary_dense_as_conv,
    rewrite_small_map_convs,
    zero_padding_hazards,
)

lce = require("larq_compute_engine")

# LCE computes a correct binary conv exactly (integer popcounts) and applies BatchNorm as one
# float multiply-add: ~1e-6 of the output scale (measured); the faulty kernels are off by
# 50-300 % of the scale, so 1e-4 separates the two by orders of magnitude.
LCE_RTOL = 1e-4
KERNELS = {"indirect BGEMM": {"use_indirect_bgemm": True}, "default": {}}


def _conv_model(height, width, *, kernel=3, strides=1, seed=0):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((height, width, 64))
    x = lq.layers.QuantConv2D(32, kernel, strides=strides, padding="same", pad_values=0.0,
                              use_bias=False, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              name="zero_padded")(inputs)  # fmt: skip
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    return trained_like(tf.keras.Model(inputs, x), seed=seed)


def _relative_errors(model, buf, seed=0):
    x = np.random.RandomState(seed).uniform(-1, 1, (2, *model.input_shape[1:])).astype(np.float32)
    expected = model(x, training=False).numpy()
    scale = np.abs(expected).max()
    return {
        name: float(np.abs(lce.testing.Interpreter(buf, **kw).predict(x) - expected).max() / scale)
        for name, kw in KERNELS.items()
    }


def _convert_quietly(model, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*computed wrongly")  # no hazard expected
        return convert_model(model, **kwargs)


@pytest.mark.parametrize(
    "shape,kernel,strides,plan",
    [
        ((1, 1), 3, 1, "cropped"),
        ((1, 1), 3, 2, "cropped"),
        ((1, 5), 3, 1, "cropped"),
        ((6, 1), 3, 2, "cropped"),
        ((2, 2), 3, 1, "paired"),
        ((2, 2), 3, 2, "paired"),
        ((2, 7), 3, 1, "paired"),
        ((4, 4), 5, 1, "paired"),
        ((1, 3), 5, 1, "paired"),
    ],
)
def test_small_maps_are_rewritten_exactly(shape, kernel, strides, plan):
    model = _conv_model(*shape, kernel=kernel, strides=strides)
    assert list(zero_padding_hazards(model)) == ["zero_padded"]
    rewritten, plans = rewrite_small_map_convs(model)
    assert plans == {"zero_padded": plan}
    assert zero_padding_hazards(rewritten) == {}
    assert model.get_layer("zero_padded").kernel_size == (kernel, kernel)  # input unchanged
    x = np.random.RandomState(1).uniform(-1, 1, (4, *shape, 64)).astype(np.float32)
    np.testing.assert_allclose(rewritten(x, training=False), model(x, training=False), atol=1e-5)
    buf = _convert_quietly(model)
    errors = _relative_errors(model, buf)
    assert max(errors.values()) <= LCE_RTOL, errors
    report = conversion_report(buf, keras_model=model)
    assert [item["layer"] for item in report["small_map_layers"]] == ["zero_padded"]


@pytest.mark.parametrize("shape", [(1, 1), (2, 2)])
def test_without_the_rewrite_lce_is_wrong_and_says_so(shape):
    """Negative control: LCE's optimized kernels miscompute these layers."""
    model = _conv_model(*shape)
    with pytest.warns(
        UserWarning,
        match=f"zero_padded: zero-padded binary 3x3 conv on a {shape[0]}x{shape[1]} map",
    ):
        buf = convert_model(model, fix_small_maps=False)
    errors = _relative_errors(model, buf)
    assert min(errors.values()) > 0.3, errors


@pytest.mark.parametrize("shape", [(3, 3), (8, 8)])
def test_maps_at_least_as_large_as_the_kernel_are_left_alone(shape):
    model = _conv_model(*shape)
    assert zero_padding_hazards(model) == {}
    assert rewrite_small_map_convs(model) == (model, {})
    assert max(_relative_errors(model, _convert_quietly(model)).values()) <= LCE_RTOL


# A real network through the rewrite and LCE (make test checks the rewrite on single layers)
@pytest.mark.large
@pytest.mark.parametrize("size", [32, 64])
def test_larq_zoo_meliusnet22_at_small_inputs_converts_exactly(size):
    """The larq_zoo preset pads with zeros: at 32x32 sections 2 and 3 run on 2x2 and 1x1
    maps, at 64x64 section 3 on 2x2 maps."""
    tf.keras.utils.set_random_seed(size)
    model = trained_like(melius_larq.MeliusNet22(preset="larq_zoo", input_shape=(size, size, 3),
                                                 num_classes=10, classifier_activation=None))  # fmt: skip
    plans = rewrite_small_map_convs(model)[1]
    assert len(plans) == {32: 16, 64: 8}[size]  # 4 blocks x 2 convs per section
    errors = _relative_errors(model, _convert_quietly(model))
    assert max(errors.values()) <= LCE_RTOL, errors


def _binary_mlp(dense_class, seed=0):
    """Float conv -> flatten -> binary dense -> BN -> binary dense (logits)."""
    tf.keras.utils.set_random_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip")  # fmt: skip
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn0")(x)
    x = tf.keras.layers.Flatten()(x)
    x = dense_class(64, use_bias=False, name="bdense1", **binary)(x)
    x = tf.keras.layers.BatchNormalization(name="bn1")(x)
    x = dense_class(10, name="bdense2", **binary)(x)
    model = trained_like(tf.keras.Model(inputs, x), seed=seed)
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if hasattr(layer, "alpha"):  # powers of two: exact products in both runtimes
            layer.alpha.assign(2.0 ** -rng.randint(0, 5, layer.alpha.shape))
        if getattr(layer, "use_bias", False) and layer.name == "bdense2":
            layer.bias.assign(rng.normal(0, 1, layer.bias.shape))
    return model


@pytest.mark.parametrize("kind", ["QuantDense", "BNNPlusDense"])
def test_binary_dense_layers_run_as_binary_convs(kind):
    from melius_larq.bnnplus import BNNPlusDense

    model = _binary_mlp({"QuantDense": lq.layers.QuantDense, "BNNPlusDense": BNNPlusDense}[kind])
    rewritten, names = binary_dense_as_conv(model)
    assert names == ["bdense1", "bdense2"]
    assert isinstance(model.get_layer("bdense1"), lq.layers.QuantDense)  # input unchanged
    x = np.random.RandomState(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(rewritten(x, training=False), model(x, training=False), atol=1e-5)
    buf = convert_model(model)
    ops = op_inventory(buf)
    assert ops["LceBconv2d"] == 2 and "FULLY_CONNECTED" not in ops, ops
    assert max(_relative_errors(model, buf).values()) <= LCE_RTOL
    report = conversion_report(buf, keras_model=model)
    assert report["binary_layers"] == report["accelerated_binary_layers"] == 2
    assert report["stayed_float"] == []
    # without the rewrite both layers stay float
    assert op_inventory(convert_model(model, binary_dense=False))["FULLY_CONNECTED"] == 2
