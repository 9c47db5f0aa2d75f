"""int8 non-binary layers: calibrated fake-quantization converts to int8 kernels around LceBconv2d."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import binary_branch, fashion_mnist_or_skip, require

from melius_larq._compat import tf
from melius_larq.deploy import convert_model, op_inventory
from melius_larq.deploy.int8 import convert_int8, int8_flatbuffer_summary
from melius_larq.deploy.report import conversion_report
from melius_larq.deploy.verify import keras_outputs, run_lce
from melius_larq.zoo.data import preprocess_fashion_mnist

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_int8")

require("larq_compute_engine")

# int8 rounding of every activation flips the prediction of a few near-tie images; on a
# briefly trained model 97 % top-1 agreement with the float model bounds that effect while
# any real error (a wrong scale, a float layer fed int8 data) drops agreement to chance.
MIN_INT8_AGREEMENT = 0.97


INT8_FIXTURES = Path(__file__).parent / "fixtures" / "int8"


def _calibration():
    """The first 300 Fashion-MNIST training images, as the fixture models were trained on."""
    return preprocess_fashion_mnist(np.load(INT8_FIXTURES / "calibration.npy"))


def _test_images(n=500):
    # int8 accuracy is only meaningful on real images
    return preprocess_fashion_mnist(fashion_mnist_or_skip("test")[0][:n])


def _data():
    """The 4,096 training images the fixture models were trained on, and 500 test images."""
    x, y = fashion_mnist_or_skip("train")
    return preprocess_fashion_mnist(x[:4096]), y[:4096], _test_images()


@pytest.fixture(scope="module")
def trained():
    """The committed small BNN (tests/fixtures/int8/make_models.py: a float stem, one
    ±1-padded binary conv branch and a float head, 2 epochs on 4,096 Fashion-MNIST images),
    its 300 calibration images and 500 test images."""
    model = tf.keras.models.load_model(INT8_FIXTURES / "small_bnn.keras")
    return model, _calibration(), _test_images()


def test_int8_flatbuffer_runs_every_non_binary_layer_in_int8(trained):
    model, x, x_test = trained
    buf = convert_int8(model, x[:300])
    summary = int8_flatbuffer_summary(buf)
    assert summary["LceBconv2d"] == {"float32": 1}  # requantized by a QUANTIZE (below)
    # QUANTIZE of the float input and of the binary conv's output; none after SOFTMAX, whose
    # fake-quant range is int8 SOFTMAX's fixed output scale
    assert op_inventory(buf)["QUANTIZE"] == 2
    for op in ("CONV_2D", "FULLY_CONNECTED"):
        assert set(summary[op]) == {"int8"}, summary
    weights = conversion_report(buf)["bytes_by_weight_type"]
    float_weights = conversion_report(convert_model(model))["bytes_by_weight_type"]["float32"]
    # every non-binary weight is int8 (biases int32); float32 is left only for LceBconv2d's
    # per-channel output multiplier and bias (32 channels x 2 x 4 bytes)
    assert weights.get("float32", 0) == 32 * 2 * 4
    assert weights["int8"] < 0.3 * float_weights
    expected = keras_outputs(model, x_test).argmax(1)
    got = run_lce(buf, x_test).argmax(1)
    assert np.mean(got == expected) >= MIN_INT8_AGREEMENT


def test_int8_io(trained):
    model, x, x_test = trained
    buf = convert_int8(model, x[:100], int8_io=True)
    from melius_larq.deploy.verify import lce_interpreter

    interp = lce_interpreter(buf)
    assert interp.input_types[0] == np.int8 and interp.output_types[0] == np.int8
    got = run_lce(buf, x_test[:200]).argmax(1)  # run_lce quantizes and dequantizes the I/O
    assert np.mean(got == keras_outputs(model, x_test[:200]).argmax(1)) >= MIN_INT8_AGREEMENT


def test_int8_needs_calibration_data(trained):
    with pytest.raises(ValueError, match="calibration data"):
        convert_int8(trained[0], np.zeros((0, 28, 28, 1), np.float32))


# LCE and TFLite's QUANTIZE round the same float value to int8, so the rewrite may move an
# int8 binary-conv output by one step at exact ties; through the rest of the small network
# that moves a probability by a few output steps (1/256 each; measured: at most 3.8 steps,
# in 6 % of the outputs), while a QUANTIZE in the wrong place or reading the wrong tensor
# moves them by tens of steps.
MAX_REQUANTIZE_OUTPUT_STEPS = 8


def test_binary_convs_write_float32_and_a_quantize_makes_their_int8_tensor(trained):
    from melius_larq._tflite import operators, read_model
    from melius_larq.deploy.int8 import float_bconv_outputs

    model, x, x_test = trained
    lce_int8 = convert_int8(model, x[:300], bconv_float_outputs=False)
    assert int8_flatbuffer_summary(lce_int8)["LceBconv2d"] == {"int8": 1}
    rewritten = float_bconv_outputs(lce_int8)
    before, after = read_model(lce_int8), read_model(rewritten)
    ops = operators(after)
    (i,) = [k for k, op in enumerate(ops) if op["op"] == "LceBconv2d"]
    (old,) = [op for op in operators(before) if op["op"] == "LceBconv2d"]
    wide, int8 = ops[i]["outputs"][0], old["outputs"][0]
    tensors = after.subgraphs[0].tensors
    assert tensors[wide].type == 0 and tensors[int8].type == 9  # float32, int8
    assert ops[i + 1] == {"op": "QUANTIZE", "inputs": [wide], "outputs": [int8]}
    assert [op["inputs"] for op in ops if int8 in op["inputs"]] == [
        op["inputs"] for op in operators(before) if int8 in op["inputs"]
    ]  # every consumer still reads the int8 tensor
    expected, got = run_lce(lce_int8, x_test), run_lce(rewritten, x_test)
    assert np.abs(got - expected).max() <= MAX_REQUANTIZE_OUTPUT_STEPS / 256
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.99
    assert float_bconv_outputs(rewritten) == rewritten  # nothing left to rewrite


def _small_grouped(groups: int = 4):
    """A float stem, a grouped float conv (GroupConv2D) and a binary conv, 28x28x1."""
    from melius_larq.layers import GroupConv2D

    inp = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = GroupConv2D(32, 3, strides=2, padding="same", groups=groups, use_bias=False,
                    name="grouped")(x)  # fmt: skip
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = binary_branch(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(10)(x))


# Splitting a grouped conv changes no int8 arithmetic (the same per-output-channel kernel
# scales, every group's output at the layer's range): the two flatbuffers agree up to the
# rounding of the one requantization their graphs place differently, far below a logit error
# that a wrong kernel slice or group order causes (order 1 of the logit scale).
SPLIT_INT8_RTOL = 1e-2


def test_grouped_float_convs_run_as_split_per_group_int8_convs():
    x, y, x_test = _data()
    tf.keras.utils.set_random_seed(0)
    model = _small_grouped()
    model.compile(tf.keras.optimizers.Adam(3e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x[:2048], y[:2048], batch_size=64, epochs=1, verbose=0)
    split = convert_int8(model, x[:300])
    native = convert_int8(model, x[:300], split_grouped_convs=False)
    ops_split, ops_native = op_inventory(split), op_inventory(native)
    # SPLIT, one CONV_2D per group (4) next to the stem's, all int8, one CONCATENATION more
    assert ops_split["SPLIT"] == 1 and ops_split["CONV_2D"] == 1 + 4, ops_split
    assert "SPLIT" not in ops_native and ops_native["CONV_2D"] == 2, ops_native
    assert ops_split["CONCATENATION"] == ops_native["CONCATENATION"] + 1
    assert set(int8_flatbuffer_summary(split)["CONV_2D"]) == {"int8"}
    assert ops_split.get("DEQUANTIZE", 0) == ops_native.get("DEQUANTIZE", 0)  # no float detour
    a, b = run_lce(split, x_test), run_lce(native, x_test)
    np.testing.assert_allclose(a, b, atol=SPLIT_INT8_RTOL * np.abs(b).max(), rtol=0)


@pytest.mark.parametrize("calibrated", [False, True])
def test_prepare_for_int8_keeps_the_function_of_a_meliusnet(calibrated):
    """BN folding, pre-sign shifts and the rescaling of binary and concatenated outputs
    change no prediction; with calibration every concatenated channel lies in [-1, 1] on
    the calibration inputs and the largest one reaches 1."""
    from conftest import trained_like

    import melius_larq
    from melius_larq.deploy.int8 import prepare_for_int8

    model = trained_like(melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10,
                                                   stem="small", classifier_activation=None), 1)  # fmt: skip
    x = np.random.RandomState(0).normal(0, 1, (8, 28, 28, 1)).astype(np.float32)
    expected = model(x, training=False).numpy()
    prepared = prepare_for_int8(model, calibration=x if calibrated else None)
    got = prepared(x, training=False).numpy()
    rescaled = [layer.name for layer in prepared.layers if layer.name.endswith("_rescale")]
    assert len(rescaled) == 14  # one per binary conv
    # BN folding re-associates float sums; signs of values within round-off of 0 may flip,
    # so compare the logits' scale-relative error and the predictions
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max())
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    concats = [layer for layer in prepared.layers
               if isinstance(layer, tf.keras.layers.Concatenate)]  # fmt: skip
    peaks = [np.abs(out.numpy()).max(axis=(0, 1, 2)) for out in
             tf.keras.Model(prepared.inputs, [c.output for c in concats])(x)]  # fmt: skip
    if calibrated:
        for peak in peaks:
            assert peak.max() <= 1.0 + 1e-5
        assert max(p.max() for p in peaks) >= 1.0 - 1e-5
    else:  # binary sums x 1/32 and float features: channels far outside [-1, 1]
        assert max(p.max() for p in peaks) > 2.0


def test_int8_meliusnet_has_no_rescaling_ops_left():
    """The pre-sign BatchNorms are ADDs (no depthwise conv per block) and the binary
    outputs' rescaling is fused into LceBconv2d (no MUL)."""
    from conftest import trained_like

    import melius_larq

    model = trained_like(melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10,
                                                   stem="small"), 2)  # fmt: skip
    x = np.random.RandomState(0).normal(0, 1, (16, 28, 28, 1)).astype(np.float32)
    ops = op_inventory(convert_int8(model, x))
    assert ops["LceBconv2d"] == 14 and "MUL" not in ops
    assert ops["ADD"] == 14 + 7  # pre-sign shifts and the ImprovementBlocks' additions
    assert ops["DEPTHWISE_CONV_2D"] == 4  # the three transitions' and the head's BatchNorm


# preset "lce" pads binary convs with +1 (a negated channel's padding would be wrong, so a
# BatchNorm with negative scales becomes a ±1 depthwise conv); "larq_zoo" pads with 0
@pytest.mark.parametrize("preset", ["lce", "larq_zoo"])
def test_presign_batchnorms_become_exact_sign_thresholds(preset):
    """Pre-sign BatchNorms with negative, tiny and ordinary scales keep every sign: with
    zero padding (and without negative scales) they become per-channel shifts by their
    thresholds and the binary convs that read them negate exactly the input channels whose
    scale is negative; with ±1 padding a BatchNorm with negative scales becomes a ±1
    depthwise conv. The prepared model (calibrated on the same inputs, so thresholds are
    clipped only beyond them) predicts what the original does."""
    from conftest import trained_like

    import melius_larq
    from melius_larq.deploy.int8 import prepare_for_int8
    from melius_larq.fold import batchnorm_affine, feeds_only_signs
    from melius_larq.layers import ChannelShift

    model = trained_like(melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10,
                                                   stem="small", classifier_activation=None,
                                                   preset=preset), 3)  # fmt: skip
    rng = np.random.RandomState(0)
    presign = [layer for layer in model.layers
               if isinstance(layer, tf.keras.layers.BatchNormalization) and feeds_only_signs(layer)]  # fmt: skip
    assert len(presign) == 14
    for i, layer in enumerate(presign):
        signs = [-1.0, 1.0, 1e-4] if i % 2 else [1.0, 1e-4]  # every other one all positive
        gamma = layer.gamma.numpy() * rng.choice(signs, size=layer.gamma.shape)
        layer.gamma.assign(gamma)
    x = rng.normal(0, 1, (16, 28, 28, 1)).astype(np.float32)
    expected = model(x, training=False).numpy()
    prepared = prepare_for_int8(model, calibration=x)
    for layer in presign:
        a, _ = batchnorm_affine(layer)
        rewritten = prepared.get_layer(layer.name)
        conv = layer._outbound_nodes[0].outbound_layer
        before = conv.get_weights()[0]
        after = prepared.get_layer(conv.name).get_weights()[0]
        flipped = np.sign(after) != np.sign(np.where(before == 0, 1.0, before))
        if preset == "lce" and np.any(a < 0):
            kernel = rewritten.get_weights()[0]
            np.testing.assert_array_equal(kernel.ravel(), np.sign(a))
            assert not flipped.any()
        else:
            assert isinstance(rewritten, ChannelShift)
            # an input channel is negated in every tap and output, exactly when its scale < 0
            np.testing.assert_array_equal(flipped.all(axis=(0, 1, 3)), a < 0)
            np.testing.assert_array_equal(flipped.any(axis=(0, 1, 3)), a < 0)
    got = prepared(x, training=False).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max())
    assert model.get_layer(presign[0].name).gamma.numpy()[0] == presign[0].gamma.numpy()[0]


# Largest int8 logit error relative to the logit scale on 256 images: 0.013-0.037 over
# three weight draws with the dead-channel rule, 1.0 (every logit lost) without it.
DEAD_CHANNEL_INT8_ERROR = 0.1


def test_dead_channels_do_not_swallow_a_depthwise_kernel():
    """A BatchNorm input channel that is always 0 (a dead ReLU channel: moving variance
    ~0, so a huge scale) keeps only its constant output; with its scale in the per-tensor
    int8 kernel the other channels would round to zero and the int8 model lose its
    predictions (the planted bug: the same channel with the dead-channel rule disabled)."""
    from melius_larq.deploy.int8 import share_scales

    x, _, _ = _data()
    x = x[:256]
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((28, 28, 1))
    h = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = tf.keras.layers.BatchNormalization(epsilon=1e-30)(h)
    h = tf.keras.layers.MaxPool2D(2)(h)
    h = tf.keras.layers.ReLU()(h)
    h = tf.keras.layers.Conv2D(8, 1)(h)
    out = tf.keras.layers.Dense(10)(tf.keras.layers.GlobalAveragePooling2D()(h))
    model = tf.keras.Model(inp, out)
    conv = model.layers[1]
    kernel, bias = conv.get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # channel 0: always 0 after the ReLU
    conv.set_weights([kernel, bias])
    bn = model.layers[2]
    feats = tf.keras.Model(inp, conv.output)(x).numpy()
    variance = feats.reshape(-1, 8).var(0)
    variance[0] = 0.0
    bn.set_weights([np.ones(8), np.full(8, 0.1), feats.reshape(-1, 8).mean(0), variance])
    expected = keras_outputs(model, x)

    def int8_error(**options):
        from melius_larq.deploy.int8 import calibrate_ranges, fake_quant_model, prepare_for_int8

        calib = x[:128]
        prepared = prepare_for_int8(model, calibration=calib, **options)
        qmodel = fake_quant_model(
            prepared, share_scales(prepared, calibrate_ranges(prepared, calib))
        )
        got = run_lce(convert_model(qmodel), x)
        return np.abs(got - expected).max() / np.abs(expected).max()

    assert int8_error() < DEAD_CHANNEL_INT8_ERROR
    assert int8_error(constant_dead_channels=False) > 0.5


# 10x the package default (3e-5, chosen for an already accurate int8 model): strong enough
# that one epoch on shuffled labels (the planted bug) visibly destroys accuracy
QAT_TEST_LR = 3e-4


# One epoch of fine-tuning plus two int8 conversions (25-40 s on 2 cores), and the planted-bug
# control (shuffled labels) as long again: in the large set that CI runs (make test-all).
@pytest.mark.large
@pytest.mark.parametrize("planted", [False, True])
def test_quantization_aware_finetuning_keeps_or_improves_accuracy(trained_tiny, planted):
    """One epoch of QAT on the 4,096 training images: int8 test top-1 at least that of the
    calibrated conversion (within one image of 500); fine-tuning on shuffled labels (the
    planted bug) loses it."""
    model, out, x_test = trained_tiny
    x, y, _ = _data()
    _, y_test = fashion_mnist_or_skip("test")
    y_test = y_test[: len(x_test)]
    before_weights = [w.copy() for w in model.get_weights()]
    calib = x[:300]
    plain = run_lce(convert_int8(model, calib), x_test).argmax(1)
    labels = np.random.RandomState(0).permutation(y) if planted else y
    tuned = run_lce(convert_int8(model, calib, qat_data=(x, labels), qat_epochs=1,
                                 qat_learning_rate=QAT_TEST_LR),
                    x_test).argmax(1)  # fmt: skip
    acc_plain, acc_tuned = np.mean(plain == y_test), np.mean(tuned == y_test)
    if planted:
        assert acc_tuned < acc_plain - 0.05, (acc_plain, acc_tuned)
    else:
        assert acc_tuned >= acc_plain - 1 / len(y_test), (acc_plain, acc_tuned)
    for got, want in zip(model.get_weights(), before_weights, strict=True):
        np.testing.assert_array_equal(got, want)  # the input model is not modified


def test_qat_needs_labelled_data(trained):
    model = trained[0]
    x = np.zeros((4, *model.input_shape[1:]), np.float32)
    with pytest.raises(ValueError, match="needs labelled training images"):
        convert_int8(model, x, qat_epochs=1)
    with pytest.raises(ValueError, match="qat_epochs=-1"):
        convert_int8(model, x, qat_epochs=-1)


# Per-channel int8 weights differ from the float ones by at most half a step (max|w|/254 per
# channel); through one conv + dense on unit-scale inputs the logits move by well under 2 %
# of their scale (measured ~0.3 %); a missing or mis-scaled DEQUANTIZE moves them by ~100 %.
WEIGHT_INT8_OUTPUT_RTOL = 2e-2


def test_quantize_per_channel_is_within_half_a_step():
    from melius_larq.deploy.int8 import quantize_per_channel

    w = np.random.RandomState(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    w[..., 2] = 0.0
    codes, scales = quantize_per_channel(w, axis=3)
    assert codes.dtype == np.int8 and scales.shape == (5,) and np.abs(codes).max() == 127
    assert np.all(np.abs(codes * scales - w) <= scales / 2 + 1e-7)
    assert scales[2] == 1.0 and not codes[..., 2].any()


def test_weight_only_int8_storage_shrinks_and_keeps_the_function():
    from melius_larq import _tflite
    from melius_larq.deploy.int8 import INT8_WEIGHT_PREFIX, quantize_per_channel, store_weights_int8

    x = tf.keras.Input((12, 12, 3))
    y = tf.keras.layers.Conv2D(64, 3, name="conv")(x)
    y = tf.keras.layers.GlobalAveragePooling2D()(y)
    y = tf.keras.layers.Dense(100, name="fc")(y)
    model = tf.keras.Model(x, y)
    buf = convert_model(model)
    buf8 = store_weights_int8(buf)
    weights = 3 * 3 * 3 * 64 + 64 * 100
    # 3 of every 4 weight bytes go; scales and the new tensors' metadata cost a little
    assert len(buf) - len(buf8) > 2.5 * weights
    assert op_inventory(buf8)["DEQUANTIZE"] == 2
    tree = _tflite.read_model(buf8)
    stored = {t.name.decode(): t for t in tree.subgraphs[0].tensors
              if t.name.decode().startswith(INT8_WEIGHT_PREFIX)}  # fmt: skip
    conv = next(t for n, t in stored.items() if "conv" in n)
    kernel = model.get_layer("conv").kernel.numpy().transpose(3, 0, 1, 2)  # TFLite layout
    codes, scales = quantize_per_channel(kernel, axis=0)
    data = np.asarray(tree.buffers[conv.buffer].data, np.uint8).view(np.int8).reshape(codes.shape)
    assert np.array_equal(data, codes)
    np.testing.assert_array_equal(conv.quantization.scale, scales)
    inputs = np.random.RandomState(1).normal(size=(8, 12, 12, 3)).astype(np.float32)
    expected = keras_outputs(model, inputs)
    got = run_lce(buf8, inputs)
    assert np.max(np.abs(got - expected)) <= WEIGHT_INT8_OUTPUT_RTOL * np.max(np.abs(expected))
    assert not np.array_equal(got, run_lce(buf, inputs))  # the weights really changed
    assert op_inventory(store_weights_int8(buf, skip=("conv",)))["DEQUANTIZE"] == 1


# MeliusNetTiny trained for one epoch on 4,096 Fashion-MNIST images, 500 test images. int8
# rounding before a sign flips some of the following binary activations, so a binary network's
# logits move much more than a float network's: measured mean |LCE - Keras| / mean |Keras|
# 0.169 (top-1 agreement 0.93) for full int8 and 0.075 (0.958) for int8 weights only. The
# bounds leave ~30 % headroom; one float conv whose weights are off by 25 % (a wrong fold or
# scale) measured 0.25-0.31 (full int8) and 0.26 (weights only), and fails them.
INT8_MEAN_LOGIT_ERROR = 0.22
INT8_MIN_AGREEMENT = 0.91
WEIGHTS_INT8_MEAN_LOGIT_ERROR = 0.11
WEIGHTS_INT8_MIN_AGREEMENT = 0.93


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """The committed MeliusNetTiny (tests/fixtures/int8/make_models.py), copied with its
    calibration inputs into a directory the conversions write to."""
    out = tmp_path_factory.mktemp("int8_tiny")
    shutil.copy(INT8_FIXTURES / "meliusnet_tiny.keras", out / "tiny.keras")
    np.save(out / "calibration.npy", _calibration())
    return tf.keras.models.load_model(out / "tiny.keras"), out, _test_images()


def _logit_check(buf, model, x):
    expected = keras_outputs(model, x)
    got = run_lce(buf, x)
    error = float(np.abs(got - expected).mean() / np.abs(expected).mean())
    return error, float(np.mean(got.argmax(1) == expected.argmax(1)))


def _convert(out, name, *flags):
    from melius_larq.cli import main

    path = out / name
    args = ["convert", out / "tiny.keras", "-o", path, *flags]
    assert main([str(a) for a in args]) == 0
    return path.read_bytes()


def test_meliusnet_through_convert_int8(trained_tiny, monkeypatch):
    import melius_larq.deploy.int8 as int8

    model, out, x_test = trained_tiny
    buf = _convert(out, "int8.tflite", "--int8", "--calibration", out / "calibration.npy")
    summary = int8_flatbuffer_summary(buf)
    assert summary["LceBconv2d"] == {"float32": 14}
    error, agreement = _logit_check(buf, model, x_test)
    assert error <= INT8_MEAN_LOGIT_ERROR and agreement >= INT8_MIN_AGREEMENT, (error, agreement)
    # --lce-int8-outputs reaches convert_int8 (whose effect the small-BNN test checks)
    calls = []
    monkeypatch.setattr(int8, "convert_int8", lambda *a, **kw: calls.append(kw) or buf)
    _convert(out, "int8_lce.tflite", "--int8", "--lce-int8-outputs",
             "--calibration", out / "calibration.npy")  # fmt: skip
    assert calls[0]["bconv_float_outputs"] is False


def test_meliusnet_through_convert_int8_weights(trained_tiny):
    model, out, x_test = trained_tiny
    buf = _convert(out, "w8.tflite", "--int8-weights")
    assert op_inventory(buf)["DEQUANTIZE"] > 0
    error, agreement = _logit_check(buf, model, x_test)
    assert error <= WEIGHTS_INT8_MEAN_LOGIT_ERROR, error
    assert agreement >= WEIGHTS_INT8_MIN_AGREEMENT, agreement


@pytest.mark.large  # a negative control of the bounds above: two more int8 conversions
def test_the_int8_checks_fail_for_a_mis_scaled_layer(trained_tiny, monkeypatch):
    """Negative controls: the bounds above catch one float conv scaled by 1.25."""
    import melius_larq.deploy.int8 as int8
    import melius_larq.deploy.int8_flatbuffer as int8_flatbuffer

    model, out, x_test = trained_tiny
    prepare = int8.prepare_for_int8

    def mis_scaled_prepare(m, **kwargs):
        prepared = prepare(m, **kwargs)
        layer = prepared.get_layer("section_1_transition_pw")
        kernel, *rest = layer.get_weights()
        layer.set_weights([kernel * 1.25, *rest])
        return prepared

    monkeypatch.setattr(int8, "prepare_for_int8", mis_scaled_prepare)
    buf = _convert(out, "bad_int8.tflite", "--int8", "--calibration", out / "calibration.npy")
    error, agreement = _logit_check(buf, model, x_test)
    assert error > INT8_MEAN_LOGIT_ERROR or agreement < INT8_MIN_AGREEMENT, (error, agreement)

    quantize = int8_flatbuffer.quantize_per_channel
    calls = []

    def mis_scaled_quantize(weights, axis):
        codes, scales = quantize(weights, axis)
        calls.append(weights.shape)
        return codes, scales * 1.25 if len(calls) == 2 else scales

    monkeypatch.setattr(int8_flatbuffer, "quantize_per_channel", mis_scaled_quantize)
    buf = _convert(out, "bad_w8.tflite", "--int8-weights")
    assert len(calls) > 2
    error, agreement = _logit_check(buf, model, x_test)
    assert error > WEIGHTS_INT8_MEAN_LOGIT_ERROR or agreement < WEIGHTS_INT8_MIN_AGREEMENT
