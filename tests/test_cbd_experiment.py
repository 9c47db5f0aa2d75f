"""The CBD-against-plain experiment (melius_larq.zoo.cbd_experiment) end to end, on a tiny
Fashion-MNIST."""

import json
import re

import pytest

from melius_larq._compat import tf
from melius_larq.zoo import cbd_experiment
from melius_larq.zoo.cbd_experiment import main, pareto_front, run

# bits/weight are ratios of integer bit counts computed in float64: equal up to rounding.
BITS_RTOL = 1e-12


def _kernels(model):
    return {
        layer.name: layer.kernel.numpy()
        for layer in model.layers
        if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense))
    }


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
                               ("plain_layer", 4, None)}  # fmt: skip
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
        for method in ("cbd", "plain", "plain_layer"):
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
    text = (results / "results.md").read_text()
    for heading in ("## vgg", "## resnet18", "### Final points", "### Where CBD's factoring",
                    "with one scale per layer (CBD's granularity"):  # fmt: skip
        assert heading in text
    assert "| CBD J=4, btn 0.1 | conv1_2 |" in text
    assert (results / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A re-run reuses the trained networks: training must not be called again.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(cbd_experiment, "_train_vgg", no_training)
    monkeypatch.setattr(cbd_experiment, "_train_resnet", no_training)
    budgets = {
        "vgg": cbd_experiment.Budget(epochs=1, batch_size=32, train_limit=256),
        "resnet18": cbd_experiment.Budget(epochs=1, batch_size=32, width=0.125, train_limit=256),
    }  # the --smoke budgets
    again = run(tmp_path / "again", runs, budgets=budgets, cbd_bits=[], plain_bits=[4],
                plain_layer_bits=[],
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
