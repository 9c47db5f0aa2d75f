"""CBD on Keras models: compress_model, the .cbd storage format, int8 TFLite export, the CLI."""

import json
import math
import os

import larq as lq
import numpy as np
import pytest

from melius_larq._compat import tf
from melius_larq.cbd import (
    apply_cbd,
    compress_model,
    export_tflite,
    int8_kernels,
    load_cbd,
    save_cbd,
    unmatricize,
    verify_tflite,
)
from melius_larq.cbd.storage import HEADER_BYTES
from melius_larq.cbd.tflite import tflite_layout

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_cbd_model")

# The TFLite interpreter runs the same float32 graph as Keras with its own summation order;
# the exported kernels are bit-identical, so outputs agree to float32 rounding (~1e-6 of the
# outputs' scale on these small models); 1e-4 still fails on any wrong code or scale.
TFLITE_OUTPUT_RTOL = 1e-4
# Per-layer metadata in the .cbd JSON (name, shapes, floats, plane list): generous cap.
METADATA_BYTES_PER_LAYER = 1024


def _structured(shape, seed):
    """Laplacian kernel with log-normal per-output and per-input scales (trained-like tails)."""
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(sigma=0.6, size=shape[-1]) * rng.lognormal(
        sigma=0.6, size=shape[-2]
    ).reshape(-1, 1)
    return (rng.laplace(size=shape) * scale).astype(np.float32) * 0.1


def small_model(seed=0):
    """conv (bias) -> conv -> BN -> nested block (conv) -> dense -> dense, 12x12x3 input."""
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = layers.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = layers.Conv2D(16, 3, strides=2, use_bias=False, name="conv_b")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    block = tf.keras.Sequential(
        [layers.Conv2D(16, 3, padding="same", name="conv_c"), layers.ReLU()], name="block"
    )
    x = block(x)
    x = layers.Flatten()(x)
    x = layers.Dense(24, activation="relu", name="fc1")(x)
    outputs = layers.Dense(10, name="fc2")(x)
    model = tf.keras.Model(inputs, outputs, name="small")
    for layer in (model.get_layer("conv_a"), model.get_layer("conv_b"), block.get_layer("conv_c"),
                  model.get_layer("fc1"), model.get_layer("fc2")):  # fmt: skip
        layer.kernel.assign(_structured(tuple(layer.kernel.shape), seed + len(layer.name)))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16), rng.normal(0, 0.1, 16),
                    rng.uniform(0.5, 1.5, 16)])  # fmt: skip
    return model


COMPRESSED = ["conv_a", "conv_b", "block/conv_c", "fc1", "fc2"]


@pytest.fixture(scope="module")
def compressed():
    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    new_model, report = compress_model(model, bits=6, bottleneck=0.2, check_two_conv=True)
    return model, before, new_model, report


@pytest.fixture(scope="module")
def exported(compressed):
    _, _, new_model, report = compressed
    return export_tflite(new_model, report)


class TestCompressModel:
    def test_input_model_untouched_and_new_model_returned(self, compressed):
        model, before, new_model, _ = compressed
        assert new_model is not model
        for old, now in zip(before, model.get_weights()):
            np.testing.assert_array_equal(old, now)
        ids = {id(v) for v in model.variables}
        assert not any(id(v) in ids for v in new_model.variables)

    def test_kernels_replaced_everything_else_copied(self, compressed):
        model, _, new_model, report = compressed
        assert [r.name for r in report.layers] == COMPRESSED
        for name, cbd in report.decompositions.items():
            path = name.split("/")
            layer = new_model.get_layer(path[0])
            original = model.get_layer(path[0])
            for part in path[1:]:
                layer, original = layer.get_layer(part), original.get_layer(part)
            np.testing.assert_array_equal(layer.kernel.numpy(), cbd.kernel())
            assert not np.array_equal(layer.kernel.numpy(), original.kernel.numpy())
            if layer.use_bias:
                np.testing.assert_array_equal(layer.bias.numpy(), original.bias.numpy())
        for a, b in zip(
            model.get_layer("bn").get_weights(), new_model.get_layer("bn").get_weights()
        ):
            np.testing.assert_array_equal(a, b)

    def test_report_numbers(self, compressed):
        model, _, new_model, report = compressed
        assert report.bits_per_weight == report.total_bits / report.total_weights
        for r in report.layers:
            cbd = report.decompositions[r.name]
            assert r.bits == 6
            assert r.payload_bits == cbd.payload_bits()
            assert r.weights == math.prod(r.kernel_shape)
            assert r.max_error <= r.error_bound * (1 + 1e-6)
            assert 0 < r.rms_error <= r.max_error
            assert r.ranks == cbd.ranks()
            assert r.storage in ("factored", "dense")
            assert r.two_conv is not None and set(r.two_conv) >= {"signed", "unsigned"}
        # the stored form decodes factors, not only dense planes: at least one layer is factored
        assert "factored" in {r.storage for r in report.layers}, [r.storage for r in report.layers]
        assert [e.name for e in report.excluded] == ["bn"]
        assert "normalisation" in report.excluded[0].reason
        biases = 8 + 16 + 24 + 10
        assert report.float_params == biases + 4 * 16
        assert report.total_weights + report.float_params == model.count_params()

    def test_report_table_and_json(self, compressed):
        report = compressed[3]
        text = str(report)
        for name in COMPRESSED:
            assert f"| {name} |" in text
        assert f"{report.bits_per_weight:.4f} bits/weight" in text
        assert "- bn (BatchNormalization" in text
        data = json.loads(report.to_json())
        assert data["bits_per_weight"] == report.bits_per_weight
        assert [layer["name"] for layer in data["layers"]] == COMPRESSED
        assert data["excluded"][0]["name"] == "bn"
        assert data["layers"][0]["ranks"] == {str(i): r for i, r in report.layers[0].ranks.items()}

    def test_selection_and_exclusion(self):
        model = small_model()
        _, report = compress_model(
            model, bits=4, bottleneck=0.2, layers=["conv_*"], exclude=["conv_b"]
        )
        assert [r.name for r in report.layers] == ["conv_a"]
        reasons = {e.name: e.reason for e in report.excluded}
        assert reasons["conv_b"] == "excluded by name"
        assert reasons["fc1"] == "not selected"
        with pytest.raises(ValueError, match="No layer with weights matches 'conv_z'"):
            compress_model(model, bits=4, bottleneck=0.2, exclude=["conv_z"])
        with pytest.raises(ValueError, match="'bn'.*cannot be compressed"):
            compress_model(model, bits=4, bottleneck=0.2, layers=["bn"])

    def test_binary_larq_kernels_are_excluded(self):
        inputs = tf.keras.Input((8, 8, 2))
        x = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="binary")(inputs)
        outputs = tf.keras.layers.Conv2D(4, 3, name="real")(x)
        model = tf.keras.Model(inputs, outputs)
        _, report = compress_model(model, bits=4, bottleneck=0.5)
        assert [r.name for r in report.layers] == ["real"]
        assert "already quantized" in report.excluded[0].reason


class TestBadInput:
    @pytest.mark.parametrize("bits", [0, 9])
    def test_bits(self, bits):
        with pytest.raises(ValueError, match=rf"`bits`.*1\.\.8, but got {bits}"):
            compress_model(small_model(), bits=bits, bottleneck=0.2)

    @pytest.mark.parametrize("bottleneck", [0.0, 1.01])
    def test_bottleneck(self, bottleneck):
        with pytest.raises(ValueError, match=r"`bottleneck`.*\(0, 1\], but got"):
            compress_model(small_model(), bits=4, bottleneck=bottleneck)

    def test_non_finite_weights_name_the_layer(self):
        model = small_model()
        layer = model.get_layer("block").get_layer("conv_c")
        kernel = layer.kernel.numpy()
        kernel[0, 0, 0, 0] = np.inf
        layer.kernel.assign(kernel)
        with pytest.raises(ValueError, match="'block/conv_c' has 1 non-finite"):
            compress_model(model, bits=4, bottleneck=0.2)

    def test_nothing_to_compress(self):
        inputs = tf.keras.Input((4, 4, 3))
        x = tf.keras.layers.BatchNormalization(name="only_bn")(inputs)
        model = tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(x))
        with pytest.raises(ValueError, match="Nothing to compress.*only_bn: normalisation"):
            compress_model(model, bits=4, bottleneck=0.2)


class TestStorage:
    def test_round_trip_is_bit_exact(self, compressed, tmp_path):
        model, _, new_model, report = compressed
        path = save_cbd(tmp_path / "small.cbd", report)
        loaded = load_cbd(path)
        assert list(loaded.layers) == COMPRESSED
        for name, kernel in loaded.kernels().items():
            np.testing.assert_array_equal(
                kernel.view(np.uint32), report.decompositions[name].kernel().view(np.uint32)
            )
            np.testing.assert_array_equal(
                loaded.layers[name].codes, report.decompositions[name].codes
            )
        rebuilt = apply_cbd(model, path)
        for a, b in zip(rebuilt.get_weights(), new_model.get_weights()):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        assert os.listdir(tmp_path) == ["small.cbd"]  # the temporary file was renamed away

    def test_size_agrees_with_the_bit_accounting(self, compressed, tmp_path):
        report = compressed[3]
        path = save_cbd(tmp_path / "small.cbd", report)
        loaded = load_cbd(path)
        size = path.stat().st_size
        assert loaded.payload_bytes == sum(-(-r.payload_bits // 8) for r in report.layers)
        overhead = size - report.total_bits / 8
        assert 0 < overhead <= HEADER_BYTES + len(report.layers) * (METADATA_BYTES_PER_LAYER + 1)

    def test_dense_fallback_round_trip(self, tmp_path):
        model = small_model(seed=3)
        _, report = compress_model(model, bits=5, bottleneck=1.0, fallback="plane")
        save_cbd(tmp_path / "m.cbd", report)
        for name, kernel in load_cbd(tmp_path / "m.cbd").kernels().items():
            np.testing.assert_array_equal(kernel, report.decompositions[name].kernel())

    def test_corrupt_and_truncated_files(self, compressed, tmp_path):
        path = save_cbd(tmp_path / "good.cbd", compressed[3])
        data = path.read_bytes()
        cases = {
            "truncated": (data[: len(data) - 3], "truncated: the header promises"),
            "short": (data[:20], "truncated: 20 bytes"),
            "flipped": (data[:-5] + bytes([data[-5] ^ 0x10]) + data[-4:], "checksum mismatch"),
            "magic": (b"PK\x03\x04" + data[4:], "expected the magic bytes"),
            "version": (
                data[:8] + (9).to_bytes(2, "little") + data[10:],
                "unsupported format version 9",
            ),
            "trailing": (data + b"\0", "trailing data"),
        }
        for name, (content, message) in cases.items():
            bad = tmp_path / f"{name}.cbd"
            bad.write_bytes(content)
            with pytest.raises(ValueError, match=message):
                load_cbd(bad)


class TestTFLite:
    def test_int8_codes_are_the_cbd_integers(self, compressed, exported):
        _, _, new_model, report = compressed
        kernels = int8_kernels(exported.flatbuffer)
        assert set(kernels) == set(COMPRESSED)
        # conv_b is followed by BN, which the converter folds: per-channel scales there.
        assert exported.layers["conv_b"] == "per-channel"
        for name in COMPRESSED:
            cbd = report.decompositions[name]
            # the int8 codes, read back through the interpreter, are S * k in TFLite layout
            want = tflite_layout(unmatricize(cbd.signed_codes(), cbd.kernel_shape))
            np.testing.assert_array_equal(kernels[name]["codes"], want)
            assert np.abs(want).max() <= 2**6 - 1
            if exported.layers[name] == "per-tensor":
                layer = new_model
                for part in name.split("/"):
                    layer = layer.get_layer(part)
                keras = tflite_layout(layer.kernel.numpy())
                np.testing.assert_array_equal(
                    kernels[name]["dequantized"].view(np.uint32), keras.view(np.uint32)
                )
                assert kernels[name]["scales"][0] == cbd.step

    def test_interpreter_matches_keras(self, compressed, exported):
        _, _, new_model, report = compressed
        interpreter = tf.lite.Interpreter(model_content=exported.flatbuffer)
        interpreter.allocate_tensors()
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        x = np.random.default_rng(1).standard_normal((1, 12, 12, 3)).astype(np.float32)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        want = new_model(x, training=False).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=TFLITE_OUTPUT_RTOL * np.abs(want).max())
        check = verify_tflite(exported.flatbuffer, new_model, report.decompositions)
        assert check["ok"], check
        assert len(exported.flatbuffer) < exported.float_bytes / 2  # int8 instead of float32

    def test_j8_is_refused(self, compressed):
        model = compressed[0]
        new_model, report = compress_model(model, bits=8, bottleneck=0.2, layers=["fc2"])
        with pytest.raises(ValueError, match="J <= 7.*J=8"):
            export_tflite(new_model, report)


@pytest.mark.large
def test_resnet18_benchmark_runs(tmp_path):
    from melius_larq.zoo.experiments.cbd_compression_time import run

    result = run(tmp_path)
    assert result["compressed_layers"] == 21
    assert result["params"] > 11_600_000
    assert (tmp_path / "bench_cbd.json").is_file()
