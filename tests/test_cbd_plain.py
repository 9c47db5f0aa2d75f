"""The plain-rounding baseline of compress_model and the per-layer factoring report of CBD."""

import json

import numpy as np
import pytest

from melius_larq._compat import tf
from melius_larq.cbd import (
    PlainLayer,
    compress_model,
    decompose_kernel,
    export_tflite,
    quantize_kernel_plain,
    save_cbd,
)

EPS32 = float(np.finfo(np.float32).eps)
# W_hat = float32(q) * s is rounded once to float32 (relative eps/2 of |W_hat| <= max|W_c|),
# and the original weight is float32: the distance to the exact grid point q s is therefore
# within s/2 + eps * max|W_c|. Named so that a looser check cannot slip in unnoticed.
ROUNDING_SLACK = EPS32
# q = W_hat / s recovered in float64 from float32 values: off an integer by at most a few
# float32 ulps relative to |q| <= 127, far below the 0.5 that separates two levels.
INTEGER_ATOL = 1e-4


def _kernel(shape, seed):
    """Laplacian weights with log-normal per-output-channel scales (channels differ a lot)."""
    rng = np.random.default_rng(seed)
    return (rng.laplace(size=shape) * rng.lognormal(sigma=1.0, size=shape[-1])).astype(np.float32)


def hand_model():
    """conv (bias, 36 weights, 4 channels) -> BN -> dense (bias, 4 x 3 = 12 weights)."""
    inputs = tf.keras.Input((6, 6, 1))
    x = tf.keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(3, name="fc")(x)
    model = tf.keras.Model(inputs, outputs, name="hand")
    model.get_layer("conv").kernel.assign(_kernel((3, 3, 1, 4), 1))
    model.get_layer("fc").kernel.assign(_kernel((4, 3), 2))
    model.get_layer("conv").bias.assign(np.arange(4, dtype=np.float32))
    return model


def _levels(bits):
    return 2 ** (bits - 1) - 1


class TestPlainLevelsAndScales:
    @pytest.mark.parametrize("bits", range(2, 9))
    @pytest.mark.parametrize("shape", [(3, 3, 8, 12), (20, 7)])
    def test_every_weight_is_scale_times_an_integer_level(self, bits, shape):
        kernel = _kernel(shape, bits)
        layer = quantize_kernel_plain(kernel, bits)
        got = layer.kernel()
        assert got.dtype == np.float32 and got.shape == kernel.shape
        # scales recomputed from the original kernel, independently of the implementation
        peak = np.abs(kernel.astype(np.float64)).reshape(-1, shape[-1]).max(axis=0)
        scales = (peak / _levels(bits)).astype(np.float32)
        np.testing.assert_array_equal(layer.scales, scales)
        q = got.astype(np.float64) / scales.astype(np.float64)
        np.testing.assert_allclose(q, np.rint(q), rtol=0, atol=INTEGER_ATOL)
        q = np.rint(q)
        assert np.abs(q).max() == _levels(bits)  # each channel's largest weight hits the top
        assert np.all(np.abs(q) <= _levels(bits))
        np.testing.assert_array_equal(got, q.astype(np.float32) * scales)  # bit-exact
        np.testing.assert_array_equal(layer.codes, q.astype(np.int8))
        # every channel reaches its own top level: one scale per channel, not per tensor
        top = np.abs(q).reshape(-1, shape[-1]).max(axis=0)
        np.testing.assert_array_equal(top, _levels(bits))

    @pytest.mark.parametrize("bits", [2, 4, 8])
    def test_round_to_nearest_within_half_a_step(self, bits):
        kernel = _kernel((3, 3, 6, 10), 10 + bits)
        layer = quantize_kernel_plain(kernel, bits)
        w = kernel.astype(np.float64)
        diff = np.abs(w - layer.kernel().astype(np.float64))
        peak = np.abs(w).reshape(-1, 10).max(axis=0)
        assert np.all(diff <= layer.scales / 2 + ROUNDING_SLACK * peak)
        # no other level is nearer: the code is round(W / s) clipped to the levels
        want = np.clip(np.rint(w / layer.scales.astype(np.float64)), -_levels(bits), _levels(bits))
        np.testing.assert_array_equal(layer.codes, want)
        assert layer.error["max"] == pytest.approx(diff.max())
        assert layer.bound == pytest.approx(layer.scales.max() / 2)

    def test_channels_are_independent(self):
        kernel = _kernel((3, 3, 4, 5), 3)
        boosted = kernel.copy()
        boosted[..., 2] *= 1000
        a, b = quantize_kernel_plain(kernel, 4), quantize_kernel_plain(boosted, 4)
        keep = [0, 1, 3, 4]
        np.testing.assert_array_equal(a.kernel()[..., keep], b.kernel()[..., keep])
        np.testing.assert_array_equal(a.codes, b.codes)

    def test_zero_channel(self):
        kernel = _kernel((5, 3), 4)
        kernel[:, 1] = 0
        layer = quantize_kernel_plain(kernel, 3)
        assert layer.scales[1] == 0
        assert not np.any(layer.kernel()[:, 1]) and np.all(np.isfinite(layer.kernel()))


class TestPlainPerLayer:
    @pytest.mark.parametrize("bits", [2, 4, 8])
    @pytest.mark.parametrize("shape", [(3, 3, 8, 12), (20, 7)])
    def test_one_scale_from_the_largest_weight_of_the_kernel(self, bits, shape):
        kernel = _kernel(shape, 20 + bits)  # channels differ a lot (log-normal scales)
        layer = quantize_kernel_plain(kernel, bits, granularity="layer")
        scale = np.float32(np.abs(kernel.astype(np.float64)).max() / _levels(bits))
        assert layer.scales.shape == (1,) and layer.scales[0] == scale
        assert layer.channels == 1 and layer.scale_bits() == 32
        w = kernel.astype(np.float64)
        want = np.clip(np.rint(w / np.float64(scale)), -_levels(bits), _levels(bits))
        np.testing.assert_array_equal(layer.codes, want)
        np.testing.assert_array_equal(layer.kernel(), want.astype(np.float32) * scale)
        # only the kernel's largest weight reaches the top level: small channels use few codes
        top = np.abs(layer.codes).reshape(-1, shape[-1]).max(axis=0)
        assert top.max() == _levels(bits) and top.min() < _levels(bits)

    def test_equals_per_channel_when_every_channel_has_the_same_peak(self):
        kernel = _kernel((3, 3, 4, 5), 8)
        kernel /= np.abs(kernel).reshape(-1, 5).max(axis=0)  # every channel peaks at 1
        a = quantize_kernel_plain(kernel, 4)
        b = quantize_kernel_plain(kernel, 4, granularity="layer")
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.kernel(), b.kernel())

    def test_bit_count_and_report_on_a_hand_made_model(self):
        model = hand_model()
        _, report = compress_model(model, bits=5, method="plain", granularity="layer")
        assert report.granularity == "layer" and report.to_dict()["granularity"] == "layer"
        assert [r.scale_bits for r in report.layers] == [32, 32]  # one float32 per layer
        assert report.bits_per_weight_with_scales == (48 * 5 + 64) / 48
        assert "plain per-layer rounding with b=5" in str(report)
        _, channel = compress_model(model, bits=5, method="plain")
        assert channel.granularity == "channel"
        assert "plain per-output-channel rounding" in str(channel)


class TestPlainModel:
    def test_exact_bit_count_on_a_hand_made_model(self):
        model = hand_model()
        _, report = compress_model(model, bits=5, method="plain")
        assert report.method == "plain" and report.bits == 5
        assert report.bottleneck is None and report.fallback is None
        assert [r.name for r in report.layers] == ["conv", "fc"]
        assert [r.weights for r in report.layers] == [36, 12]
        assert [r.payload_bits for r in report.layers] == [36 * 5, 12 * 5]
        assert [r.scale_bits for r in report.layers] == [4 * 32, 3 * 32]
        assert report.total_bits == 48 * 5 == 240
        assert report.total_scale_bits == 7 * 32 == 224
        assert report.bits_per_weight == 5
        assert report.bits_per_weight_with_scales == (240 + 224) / 48
        assert report.saved_bits == 0
        assert report.float_params == 4 + 3 + 4 * 4  # biases + BN (gamma, beta, mean, var)
        assert [e.name for e in report.excluded] == ["bn"]

    def test_cbd_counts_its_two_floats_like_the_scales(self):
        model = hand_model()
        _, report = compress_model(model, bits=4, bottleneck=0.5)
        assert [r.scale_bits for r in report.layers] == [64, 64]
        assert report.bits_per_weight_with_scales == (report.total_bits + 128) / 48
        assert report.bits_per_weight == report.total_bits / 48

    def test_input_untouched_new_model_holds_the_dequantized_kernels(self):
        model = hand_model()
        before = [w.copy() for w in model.get_weights()]
        new_model, report = compress_model(model, bits=3, method="plain")
        for old, now in zip(before, model.get_weights()):
            np.testing.assert_array_equal(old, now)
        assert new_model is not model
        ids = {id(v) for v in model.variables}
        assert not any(id(v) in ids for v in new_model.variables)
        for name in ("conv", "fc"):
            plain = report.decompositions[name]
            assert isinstance(plain, PlainLayer)
            np.testing.assert_array_equal(new_model.get_layer(name).kernel.numpy(), plain.kernel())
            np.testing.assert_array_equal(
                new_model.get_layer(name).bias.numpy(), model.get_layer(name).bias.numpy()
            )
            assert not np.array_equal(plain.kernel(), model.get_layer(name).kernel.numpy())
        for a, b in zip(
            model.get_layer("bn").get_weights(), new_model.get_layer("bn").get_weights()
        ):
            np.testing.assert_array_equal(a, b)

    def test_report_table_and_json(self):
        _, report = compress_model(hand_model(), bits=6, method="plain", exclude=["fc"])
        text = str(report)
        assert "plain per-output-channel rounding with b=6" in text
        assert "| conv | conv | 3x3x1x4 | 4 | 6.000 |" in text
        assert f"{report.bits_per_weight_with_scales:.4f} with the float32 scales" in text
        data = json.loads(report.to_json())
        assert data["method"] == "plain" and data["bits"] == 6
        assert data["total_scale_bits"] == 128
        assert data["layers"][0]["bits_per_weight_with_scales"] == (36 * 6 + 128) / 36
        assert {e["name"]: e["reason"] for e in data["excluded"]}["fc"] == "excluded by name"

    def test_plain_reports_are_not_cbd_files(self, tmp_path):
        model = hand_model()
        new_model, report = compress_model(model, bits=4, method="plain")
        with pytest.raises(ValueError, match="PlainLayer for layer 'conv'"):
            save_cbd(tmp_path / "x.cbd", report)
        with pytest.raises(ValueError, match="method='plain'"):
            export_tflite(new_model, report)
        assert not (tmp_path / "x.cbd").exists()


class TestCBDAgainstPlainProperties:
    """Properties that hold by construction; which method is more accurate is measured by the
    experiment, not asserted here."""

    @pytest.mark.parametrize("bits", [3, 5, 7])
    @pytest.mark.parametrize("bottleneck", [0.05, 0.5, 1.0])
    @pytest.mark.parametrize("fallback", ["layer", "plane"])
    def test_cbd_never_stores_more_code_bits_than_plain_at_one_bit_more(
        self, bits, bottleneck, fallback
    ):
        kernel = _kernel((3, 3, 16, 24), bits)
        cbd = decompose_kernel(kernel, bits - 1, bottleneck=bottleneck, fallback=fallback)
        plain = quantize_kernel_plain(kernel, bits)
        # same levels: 2^b - 1 = 2^(J+1) - 1 values, sign-magnitude
        assert 2 * (2**cbd.bits - 1) + 1 == 2 * plain.levels + 1
        assert cbd.payload_bits() <= plain.payload_bits() == kernel.size * bits

    def test_plain_b_is_cbd_dense_storage_at_j_equal_b_minus_1(self):
        model = hand_model()
        for bits in range(2, 9):
            _, plain = compress_model(model, bits=bits, method="plain")
            _, cbd = compress_model(model, bits=bits - 1, bottleneck=1.0)
            assert [r.dense_bits for r in plain.layers] == [r.dense_bits for r in cbd.layers]


class TestFactoringReport:
    def test_fields_when_factoring_engages_above_the_top_plane(self):
        # one output channel 50x larger: its rows hold the large weights, a low-rank support
        kernel = _kernel((3, 3, 16, 24), 7) * 0.01
        kernel[..., 5] *= 50
        inputs = tf.keras.Input((8, 8, 16))
        outputs = tf.keras.layers.Conv2D(24, 3, use_bias=False, name="conv")(inputs)
        model = tf.keras.Model(inputs, outputs)
        model.get_layer("conv").kernel.assign(kernel)
        _, report = compress_model(model, bits=6, bottleneck=0.1)
        (r,) = report.layers
        cbd = report.decompositions["conv"]
        h, w = r.matrix_shape
        assert r.a_s > 0, r
        assert r.factored_planes == tuple(range(r.a_s, -1, -1))
        assert r.factor_bits == sum(cbd.ranks()[i] * (h + w) for i in r.factored_planes)
        assert r.factoring_engaged and r.storage == "factored"
        assert r.dense_bits == h * w * 7
        assert r.payload_bits == h * w * (1 + 6 - r.a_s - 1) + r.factor_bits
        assert r.saved_bits == r.dense_bits - r.payload_bits > 0
        data = report.to_dict()
        assert data["layers_factoring_engaged"] == ["conv"]
        assert data["layers_a_s_above_0"] == ["conv"]
        assert data["saved_bits"] == r.saved_bits
        assert data["layers"][0]["factored_planes"] == list(r.factored_planes)
        assert data["layers"][0]["factoring_engaged"] is True
        text = str(report)
        assert "rank > 0 in 1 of 1 layers, a_s > 0 in 1" in text
        assert f"saves {r.saved_bits:,} bits" in text
        assert f"| {r.factor_bits} | {r.saved_bits / r.weights:.3f} |" in text

    def test_fields_of_the_dense_fallback(self):
        rng = np.random.default_rng(12)
        inputs = tf.keras.Input((64,))
        outputs = tf.keras.layers.Dense(64, use_bias=False, name="fc")(inputs)
        model = tf.keras.Model(inputs, outputs)
        model.get_layer("fc").kernel.assign(rng.uniform(-1, 1, (64, 64)).astype(np.float32))
        _, report = compress_model(model, bits=5, bottleneck=1.0)
        (r,) = report.layers
        assert r.storage == "dense" and r.factored_planes == () and r.factor_bits == 0
        assert r.saved_bits == 0 and not r.factoring_engaged
        assert r.payload_bits == r.dense_bits == 64 * 64 * 6

    def test_an_empty_top_plane_saves_a_plane_but_does_not_engage(self):
        # a 1-channel first conv: matrix 48x3, budget floor(0.2 * 3) = 0, so a = 1 and plane 0
        # is empty (rank 0)
        inputs = tf.keras.Input((8, 8, 1))
        outputs = tf.keras.layers.Conv2D(16, 3, use_bias=False, name="conv")(inputs)
        model = tf.keras.Model(inputs, outputs)
        model.get_layer("conv").kernel.assign(_kernel((3, 3, 1, 16), 5))
        _, report = compress_model(model, bits=4, bottleneck=0.2)
        (r,) = report.layers
        assert (r.a, r.a_s, r.ranks, r.factored_planes) == (1.0, 0, {0: 0}, (0,))
        assert r.saved_bits == r.weights and not r.factoring_engaged


class TestBadInput:
    @pytest.mark.parametrize("bits", [1, 9, 0, 2.5, True, "4"])
    def test_plain_bits(self, bits):
        with pytest.raises(
            ValueError, match=rf"`bits`.*2\.\.8 for method='plain', but got {bits!r}"
        ):
            compress_model(hand_model(), bits=bits, method="plain")
        with pytest.raises(ValueError, match=r"2\.\.8.*but got"):
            quantize_kernel_plain(np.ones((2, 2)), bits)

    @pytest.mark.parametrize("method", ["CBD", "round", "", None])
    def test_unknown_method(self, method):
        with pytest.raises(ValueError, match=rf"`method`.*\('cbd', 'plain'\), but got {method!r}"):
            compress_model(hand_model(), bits=4, bottleneck=0.2, method=method)

    def test_cbd_options_with_plain(self):
        with pytest.raises(ValueError, match="`bottleneck` applies to method='cbd' only.*0.2"):
            compress_model(hand_model(), bits=4, bottleneck=0.2, method="plain")
        with pytest.raises(ValueError, match="`check_two_conv` applies.*check_two_conv=True"):
            compress_model(hand_model(), bits=4, method="plain", check_two_conv=True)
        with pytest.raises(ValueError, match="`fallback` applies.*fallback='plane'"):
            compress_model(hand_model(), bits=4, method="plain", fallback="plane")

    def test_granularity_none_is_the_per_channel_default(self):
        model = hand_model()
        small, report = compress_model(model, bits=4, method="plain", granularity=None)
        assert report.granularity == "channel"
        kernel = model.get_layer("conv").kernel.numpy()
        expected = quantize_kernel_plain(kernel, 4, granularity="channel").kernel()
        np.testing.assert_array_equal(small.get_layer("conv").kernel.numpy(), expected)
        assert [r.scale_bits for r in report.layers] == [32 * 4, 32 * 3]  # one per channel

    @pytest.mark.parametrize("granularity", ["tensor", "", 1])
    def test_unknown_granularity(self, granularity):
        with pytest.raises(ValueError, match=rf"`granularity`.*but got {granularity!r}"):
            compress_model(hand_model(), bits=4, method="plain", granularity=granularity)

    def test_granularity_with_cbd(self):
        with pytest.raises(
            ValueError, match="`granularity` applies to method='plain' only.*'layer'"
        ):
            compress_model(hand_model(), bits=4, bottleneck=0.2, granularity="layer")

    def test_cbd_needs_a_bottleneck(self):
        with pytest.raises(ValueError, match="`bottleneck` in \\(0, 1\\] for method='cbd'.*None"):
            compress_model(hand_model(), bits=4)

    @pytest.mark.parametrize("method", ["cbd", "plain"])
    def test_model_without_kernels(self, method):
        inputs = tf.keras.Input((4, 4, 3))
        x = tf.keras.layers.BatchNormalization(name="only_bn")(inputs)
        model = tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(x), name="nok")
        options = {"bottleneck": 0.2} if method == "cbd" else {}
        with pytest.raises(ValueError, match="Nothing to compress in model 'nok'.*only_bn"):
            compress_model(model, bits=4, method=method, **options)

    def test_non_finite_kernel_names_the_layer(self):
        model = hand_model()
        kernel = model.get_layer("fc").kernel.numpy()
        kernel[1, 1] = np.nan
        model.get_layer("fc").kernel.assign(kernel)
        with pytest.raises(ValueError, match="'fc' has 1 non-finite"):
            compress_model(model, bits=4, method="plain")

    def test_bad_kernel_shape(self):
        with pytest.raises(ValueError, match=r"shape \(3, 3, 3\)"):
            quantize_kernel_plain(np.ones((3, 3, 3)), 4)
