"""The CBD-against-plain experiment (melius_larq.zoo.experiments.cbd) end to end, on a tiny
Fashion-MNIST."""

import json
import re

import numpy as np
import pytest

from melius_larq._compat import tf
from melius_larq.cbd import compress_model, grid, matricize
from melius_larq.zoo.experiments import cbd as cbd_experiment
from melius_larq.zoo.experiments.cbd import compress_cbd_per_channel, main, pareto_front, run

# bits/weight are ratios of integer bit counts computed in float64: equal up to rounding.
BITS_RTOL = 1e-12


def _kernels(model):
    return {
        layer.name: layer.kernel.numpy()
        for layer in model.layers
        if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense))
    }


# float32 rounding of the rescaled reconstruction, relative to a channel's largest weight.
RECON_RTOL = 1e-6


def _channel_model():
    """A Conv2D (kh = 3) and a Dense layer whose output channels span six decades."""
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input((8, 8, 2))
    x = tf.keras.layers.Conv2D(6, 3, name="conv")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(4, name="fc")(x)
    model = tf.keras.Model(inputs, outputs)
    for name in ("conv", "fc"):
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy()
        spread = 10.0 ** -np.arange(kernel.shape[-1], dtype=np.float32)  # 1 down to 1e-5
        layer.kernel.assign(kernel * spread)
    return model


def test_cbd_per_channel_scales_every_output_channel_and_counts_its_scales():
    model = _channel_model()
    before = [w.copy() for w in model.get_weights()]
    bits, bottleneck = 3, 0.5
    compressed, summary = compress_cbd_per_channel(model, bits, bottleneck)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))  # untouched
    _, per_layer = compress_model(model, bits=bits, bottleneck=bottleneck)
    for name in ("conv", "fc"):
        kernel = model.get_layer(name).kernel.numpy()
        restored = compressed.get_layer(name).kernel.numpy()
        record = summary["layers"][name]
        half_step = grid(record["a"], bits)["D"]  # |R - R_hat| <= D, R = |w| / channel max
        for c in range(kernel.shape[-1]):
            peak = np.abs(kernel[..., c]).max()
            error = np.abs(kernel[..., c] - restored[..., c]).max() / peak
            assert error <= half_step + RECON_RTOL, (name, c, error, half_step)
        # with one scale per layer the smallest channels round to zero: the control
        smallest = per_layer.decompositions[name].kernel()[..., -1]
        assert not np.any(smallest) and np.any(restored[..., -1])
        h, w = matricize(kernel).shape
        channels = kernel.shape[-1]
        assert record["matrix_shape"] == [h, w] and record["weights"] == h * w
        assert record["scale_bits"] == 32 * (channels + 1)  # a scale per channel and a
        assert record["payload_bits"] == h * w * (bits + 1) - record["saved_bits"]
        assert record["rank_bound"] == int(bottleneck * min(h, w))
    assert summary["total_scale_bits"] == 32 * (6 + 1 + 4 + 1)
    assert summary["total_bits"] == sum(r["payload_bits"] for r in summary["layers"].values())
    excluded_model, excluded = compress_cbd_per_channel(model, bits, bottleneck, ["conv"])
    assert list(excluded["layers"]) == ["fc"]
    assert np.array_equal(
        excluded_model.get_layer("conv").kernel.numpy(), model.get_layer("conv").kernel.numpy()
    )


def test_pareto_front():
    points = [
        {"bits_per_weight_all": 4.0, "val_accuracy": 0.80, "id": "a"},
        {"bits_per_weight_all": 4.5, "val_accuracy": 0.79, "id": "dominated"},
        {"bits_per_weight_all": 5.0, "val_accuracy": 0.85, "id": "b"},
        {"bits_per_weight_all": 5.0, "val_accuracy": 0.84, "id": "tie, less accurate"},
        {"bits_per_weight_all": 3.0, "val_accuracy": 0.50, "id": "c"},
        {"bits_per_weight_all": 6.0, "val_accuracy": 0.85, "id": "no gain"},
    ]
    assert [p["id"] for p in pareto_front(points)] == ["c", "a", "b"]


@pytest.mark.large  # trains two small networks and sweeps both methods: ~30 s
def test_pipeline_end_to_end_and_reuse(tiny_fmnist, tmp_path, monkeypatch, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    args = ["--smoke", "--data-dir", str(tiny_fmnist), "--results", str(results),
            "--runs", str(runs), "--exclude", "conv1_1", "stem_conv", "--verbose", "0"]  # fmt: skip
    assert main(args) == 0
    assert "wrote results.json, results.md and accuracy_vs_bits.png" in capsys.readouterr().out
    data = json.loads((results / "results.json").read_text())
    # tiny_fmnist: 64 training images, the last 10 % (6) for validation, 32 test images
    assert (data["validation_images"], data["test_images"]) == (6, 32)
    assert [n["network"] for n in data["networks"]] == ["vgg", "resnet18"]
    for net, excluded in zip(data["networks"], ("conv1_1", "stem_conv")):
        assert net["exclude"] == [excluded]  # each pattern applies where it matches
        assert net["training"]["train_images"] == 58 and not net["training"]["reused"]
        model = tf.keras.models.load_model(
            f"{net['training']['run_dir']}/model.keras", compile=False
        )
        kernels = _kernels(model)
        total = sum(k.size for k in kernels.values())
        assert net["kernel_weights"] == total
        float32_bits = 32 * kernels[excluded].size
        compressed = {n: k for n, k in kernels.items() if n != excluded}
        points = {(p["method"], p["bits"], p["bottleneck"]): p for p in net["points"]}
        assert set(points) == {("cbd", 4, 0.1), ("plain", 4, None), ("plain", 5, None),
                               ("plain_layer", 4, None), ("cbd_channel", 4, 0.1)}  # fmt: skip
        # CBD per-channel: its codes + a float32 scale per output channel and a per layer
        p = points[("cbd_channel", 4, 0.1)]
        codes = sum(r["payload_bits"] for r in p["layers"].values())
        scales = 32 * sum(k.shape[-1] + 1 for k in compressed.values())
        want = (codes + scales + float32_bits) / total
        assert p["bits_per_weight_all"] == pytest.approx(want, rel=BITS_RTOL)
        assert p["label"] == "CBD per-channel J=4, btn 0.1"
        # plain per-layer: one float32 scale per compressed layer
        p = points[("plain_layer", 4, None)]
        want = (4 * sum(k.size for k in compressed.values()) + 32 * len(compressed)
                + float32_bits) / total  # fmt: skip
        assert p["bits_per_weight_all"] == pytest.approx(want, rel=BITS_RTOL)
        assert p["label"] == "plain per-layer b=4"
        for b in (4, 5):
            # plain: b bits per compressed weight + a float32 scale per output channel +
            # the float32 kernel, over every kernel weight
            p = points[("plain", b, None)]
            scales = 32 * sum(k.shape[-1] for k in compressed.values())
            weights = sum(k.size for k in compressed.values())
            assert p["bits_per_weight"] == b
            want = (b * weights + scales + float32_bits) / total
            assert p["bits_per_weight_all"] == pytest.approx(want, rel=BITS_RTOL)
            assert 0 <= p["val_accuracy"] <= 1
        cbd = points[("cbd", 4, 0.1)]
        assert set(cbd["layers"]) == set(compressed)
        for layer in cbd["layers"].values():
            assert {"a_s", "ranks", "factored_planes", "saved_bits", "factoring_engaged"} <= set(
                layer
            )
            assert layer["saved_bits"] >= 0
        # the final points are each method's validation front, with a test accuracy each
        for method in ("cbd", "plain", "plain_layer", "cbd_channel"):
            front = pareto_front([p for p in net["points"] if p["method"] == method])
            final = [p for p in net["final"] if p["method"] == method]
            assert [p["label"] for p in final] == [p["label"] for p in front]
            for p in final:
                assert 0 <= p["test_accuracy"] <= 1
                drop = (net["float"]["test_accuracy"] - p["test_accuracy"]) * 100
                assert p["test_drop_pp"] == pytest.approx(drop)
        assert [c["cbd"] for c in net["comparison"]] == ["CBD J=4, btn 0.1"]
        (vs_layer,) = net["comparison_per_layer_scale"]
        assert vs_layer["plain"] in (None, "plain per-layer b=4")
        (channel_cbd,) = net["comparison_per_channel_cbd"]
        assert channel_cbd["cbd"] == "CBD per-channel J=4, btn 0.1"
    text = (results / "results.md").read_text()
    for heading in ("## vgg", "## resnet18", "### Final points",
                    "### Where the factoring of CBD engages",
                    "### Where the factoring of CBD per-channel engages",
                    "### CBD per-channel against the best point of plain rounding",
                    "with one scale per layer (CBD's granularity"):  # fmt: skip
        assert heading in text
    assert "| CBD J=4, btn 0.1 | conv1_2 |" in text
    assert "| CBD per-channel J=4, btn 0.1 | conv1_2 |" in text
    assert (results / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A re-run reuses the trained networks: training must not be called again.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(cbd_experiment.training, "_train_vgg", no_training)
    monkeypatch.setattr(cbd_experiment.training, "_train_resnet", no_training)
    budgets = {
        "vgg": cbd_experiment.Budget(epochs=1, batch_size=32, train_limit=256),
        "resnet18": cbd_experiment.Budget(epochs=1, batch_size=32, width=0.125, train_limit=256),
    }  # the --smoke budgets
    again = run(tmp_path / "again", runs, budgets=budgets, cbd_bits=[], plain_bits=[4],
                plain_layer_bits=[], cbd_channel_bits=[],
                exclude=["conv1_1", "stem_conv"], data_dir=str(tiny_fmnist), eval_limit=200,
                verbose=0)  # fmt: skip
    for before, after in zip(data["networks"], again["networks"]):
        assert after["training"]["reused"]
        assert after["float"] == before["float"]
        (point,) = after["points"]
        assert (
            point["val_accuracy"]
            == [p for p in before["points"] if p["label"] == "plain per-channel b=4"][0][
                "val_accuracy"
            ]
        )
        assert after["comparison"] == []


class TestBadInput:
    def test_unknown_network(self, tiny_fmnist, tmp_path):
        with pytest.raises(ValueError, match=r"networks from .*but got \['mobilenet'\]"):
            run(tmp_path, tmp_path / "runs", networks=["mobilenet"], data_dir=str(tiny_fmnist))

    @pytest.mark.parametrize(
        "option,message",
        [
            (["--plain-bits", "9"], "2..8 for method='plain', but got 9"),
            (["--cbd-bits", "0"], r"1..8, but got 0"),
            (["--bottlenecks", "1.5"], r"\(0, 1\], but got 1.5"),
            (["--plain-layer-bits", "1"], "2..8 for method='plain', but got 1"),
            (["--cbd-channel-bits", "9"], r"1..8, but got 9"),
        ],
    )
    def test_bad_sweep_fails_before_training(self, tiny_fmnist, tmp_path, capsys, option, message):
        args = ["--smoke", "--data-dir", str(tiny_fmnist), "--results", str(tmp_path / "r"),
                "--runs", str(tmp_path / "runs"), *option]  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert re.search(message, err), err
        assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()
