"""The MeliusNet vs MobileNet-v1 experiment: accounting by hand, the 28x28 sibling networks,
the learning-rate choice, the pipeline end to end on the tiny Fashion-MNIST fixture, bad input.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import require, trained_like

import melius_larq
from melius_larq._compat import tf
from melius_larq.float_models import MobileNetV1
from melius_larq.zoo import train as train_module
from melius_larq.zoo.experiments import meliusnet_vs_mobilenet as mvm

MIB = 2**20
# Counts are integers and sizes their exact multiples; only float rounding of the MiB division.
EXACT = 1e-12
# LCE folds each BatchNorm into a multiply-add and sums binary dot products exactly, so Keras
# and LCE differ by float32 re-association only (about 1e-6 of the largest logit); a wrong
# padding, channel or lost BatchNorm shift moves logits by percents of their scale.
LCE_LOGIT_RTOL = 1e-4
# A .keras round trip restores the same weights into the same graph: identical up to the
# order of float32 operations.
ROUND_TRIP_RTOL = 1e-6


# Accounting ---------------------------------------------------------------------------------
def _tiny_float_model():
    """6x6x2 -> conv 3x3 (4) -> BN -> depthwise 3x3/2 -> conv 1x1 (8) -> GAP -> dense (3)."""
    layers = tf.keras.layers
    inputs = layers.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = layers.Conv2D(8, 1, use_bias=False)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(3)(x))


def test_float_accounting_by_hand_on_a_tiny_model():
    counts = mvm.network_accounting(_tiny_float_model(), kind="float")
    conv, bn, dw, pw, dense = 3 * 3 * 2 * 4, 2 * 4, 3 * 3 * 4, 4 * 8, (8 + 1) * 3
    assert counts["params"] == conv + bn + dw + pw + dense == 175
    # MACs: conv at 6x6, depthwise and pointwise at 3x3 (stride 2); dense not counted
    flops = 6 * 6 * conv + 3 * 3 * dw + 3 * 3 * pw
    assert counts["flops"] == flops == 3204
    assert counts["bops"] == counts["binary_params"] == 0
    assert counts["ops"] == flops
    assert counts["size_mib_paper"] == pytest.approx(175 * 4 / MIB, rel=EXACT)
    int8 = mvm.network_accounting(_tiny_float_model(), kind="int8")
    assert int8["size_mib_paper"] == pytest.approx(175 / MIB, rel=EXACT)
    assert int8["ops"] == flops


def test_mobilenet_accounting_by_hand_at_28x28():
    """MobileNet-v1 0.25 with the small-input strides, counted from the paper's table."""
    table = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]  # fmt: skip
    alpha, size = 0.25, 28
    c = round(32 * alpha)
    params, flops = 9 * 1 * c + 2 * c, size * size * 9 * c  # stem conv (stride 1) + BN
    first_stride2 = True
    for filters, stride in table:
        if stride == 2 and first_stride2:
            stride, first_stride2 = 1, False  # small input: the first stride-2 block is stride 1
        size = math.ceil(size / stride)
        f = round(filters * alpha)
        params += 9 * c + 2 * c + c * f + 2 * f  # depthwise + BN, pointwise + BN
        flops += size * size * (9 * c + c * f)
        c = f
    params += (c + 1) * 10
    counts = mvm.network_accounting(
        MobileNetV1(input_shape=(28, 28, 1), num_classes=10, alpha=alpha), kind="float"
    )
    assert (counts["params"], counts["flops"], counts["ops"]) == (params, flops, flops)


def test_binary_accounting_counts_binary_weights_at_one_bit():
    import larq as lq

    inputs = tf.keras.layers.Input((4, 4, 3))
    x = tf.keras.layers.Conv2D(2, 1, use_bias=False)(inputs)  # float: 6 params, 16 * 6 MACs
    x = lq.layers.QuantConv2D(5, 3, padding="same", use_bias=False, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign")(x)  # fmt: skip
    model = tf.keras.Model(inputs, x)
    counts = mvm.network_accounting(model, kind="binary")
    binary = 3 * 3 * 2 * 5
    assert counts["binary_params"] == binary and counts["params"] == binary + 6
    assert counts["bops"] == 16 * binary and counts["flops"] == 16 * 6
    assert counts["ops"] == 16 * binary / 64 + 16 * 6
    assert counts["size_mib_paper"] == pytest.approx((binary + 6 * 32) / 8 / MIB, rel=EXACT)


def test_unknown_deployment_kind_is_named():
    with pytest.raises(ValueError, match="'int4'"):
        mvm.network_accounting(_tiny_float_model(), kind="int4")


# The sibling networks -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(mvm.SIBLINGS))
def test_sibling_channels_follow_its_spec(name):
    spec = mvm.SIBLINGS[name]
    model = mvm.create_sibling(name)
    binary = [layer for layer in model.layers if "binconv" in layer.name]
    assert len(binary) == 2 * sum(spec.blocks)  # a Dense and an Improvement conv per block
    assert all(layer.filters == spec.growth_rate for layer in binary)
    final = spec.transition_features[-1] + spec.growth_rate * spec.blocks[-1]
    assert model.get_layer("head_dense").kernel.shape == (final, 10)
    assert model.output_shape == (None, 10)


def test_siblings_are_ordered_narrow_tiny_wide_by_size_and_ops():
    counts = [
        mvm.network_accounting(
            mvm.create_sibling(n) if n in mvm.SIBLINGS else
            melius_larq.create_model(n, input_shape=(28, 28, 1), num_classes=10, stem="small")
        )
        for n in mvm.DEFAULT_NETWORKS
    ]  # fmt: skip
    for key in ("size_mib_paper", "ops", "bops"):
        assert [c[key] for c in counts] == sorted(c[key] for c in counts), key


# The siblings are built by the registry's MeliusNet builder, whose .keras round trip and LCE
# conversion make test checks on MeliusNetTiny; these two run in the large set.
@pytest.mark.large
@pytest.mark.parametrize("name", list(mvm.SIBLINGS))
def test_sibling_keras_round_trip_in_safe_mode(name, tmp_path):
    model = trained_like(mvm.create_sibling(name, classifier_activation=None))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    x = np.random.RandomState(1).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(loaded(x, training=False), expected,
                               atol=ROUND_TRIP_RTOL * np.abs(expected).max(), rtol=0)  # fmt: skip


@pytest.mark.large
@pytest.mark.parametrize("name", list(mvm.SIBLINGS))
def test_sibling_converts_to_lce_and_matches_keras(name):
    lce = require("larq_compute_engine")
    from melius_larq.deploy.convert import convert_model
    from melius_larq.deploy.flatbuffer import op_inventory

    tf.keras.utils.set_random_seed(0)  # a fixed draw: see conftest.small_model
    model = trained_like(mvm.create_sibling(name, classifier_activation=None))
    buf = convert_model(model)
    ops = op_inventory(buf)
    assert ops.get("LceBconv2d", 0) == 2 * sum(mvm.SIBLINGS[name].blocks)
    assert "LceDequantize" not in ops  # every binary conv reads a bit-packed or float input
    x = np.random.RandomState(0).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
    expected = model(x, training=False).numpy()
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(got, expected, atol=LCE_LOGIT_RTOL * scale, rtol=0)


# Choices ------------------------------------------------------------------------------------
def test_learning_rate_is_chosen_on_mean_validation_never_on_test():
    # binary fractions, so that means tie exactly
    runs = [
        {"learning_rate": 0.01, "seed": 0, "val_accuracy": 0.75, "test_accuracy": 0.99},
        {"learning_rate": 0.01, "seed": 1, "val_accuracy": 0.859375, "test_accuracy": 0.99},
        {"learning_rate": 0.001, "seed": 0, "val_accuracy": 0.8125, "test_accuracy": 0.10},
        {"learning_rate": 0.001, "seed": 1, "val_accuracy": 0.8125, "test_accuracy": 0.10},
    ]
    # mean 0.8046875 < 0.8125: neither the best single run nor the best test accuracy wins
    assert mvm.choose_learning_rate(runs) == 0.001
    runs[1]["val_accuracy"] = 0.875  # mean 0.8125: a tie keeps the rate listed first
    assert mvm.choose_learning_rate(runs) == 0.01
    with pytest.raises(ValueError, match="No runs"):
        mvm.choose_learning_rate([])


def test_final_seeds_train_at_the_chosen_rate_only(monkeypatch, tmp_path):
    trained = []
    val = {(0.01, 0): 0.75, (0.01, 1): 0.75, (0.04, 0): 0.875, (0.04, 1): 0.8125}

    def fake(recipe, run_dir, data_dir, verbose):
        lr, seed = recipe.learning_rate, recipe.seed
        assert run_dir == tmp_path / f"lr={lr:g}" / f"seed_{seed}"
        trained.append((lr, seed))
        return {"learning_rate": lr, "seed": seed, "run_dir": str(run_dir),
                "val_accuracy": val.get((lr, seed), 0.5), "train_seconds": 1.0}  # fmt: skip

    monkeypatch.setattr(mvm.experiment, "_train_or_read", fake)
    recipe = mvm.recipes.base_recipe({"name": "MeliusNetTiny", "kind": "binary",
                               "slug": "meliusnettiny"}, 1, None, ())  # fmt: skip
    chosen = mvm.train_and_choose(recipe, tmp_path, lrs=[0.01, 0.04], seeds=[0, 1],
                                  final_seeds=[5, 7])  # fmt: skip
    # the grid first (every rate, every choice seed), then the final seeds at the chosen rate
    assert trained == [(0.01, 0), (0.01, 1), (0.04, 0), (0.04, 1), (0.04, 5), (0.04, 7)]
    assert chosen["learning_rate"] == 0.04
    assert [r["seed"] for r in chosen["runs"]] == [0, 1, 5, 7]
    # the grid's means use the choice seeds only (the final seeds' 0.5 would lower 0.04's)
    assert chosen["val_by_lr"] == {"0.01": 0.75, "0.04": pytest.approx(0.84375, abs=EXACT)}


@pytest.mark.parametrize(
    ("seeds", "final", "named"),
    [([], [], "No seeds"), ([0], [0], "Seed 0 is listed twice"), ([0, 0], [], "Seed 0"),
     ([0], [-1], "Seed -1"), ([0], [1.5], "Seed 1.5"), ([True], [], "Seed True")],
)  # fmt: skip
def test_bad_seeds_are_named(seeds, final, named):
    with pytest.raises(ValueError, match=named):
        mvm.check_seeds(seeds, final)


def test_interpolation_is_linear_in_log_x_and_never_extrapolates():
    points = [(1.0, 0.8), (4.0, 0.9), (16.0, 0.92)]
    assert mvm.interpolate_log(points, 2.0) == pytest.approx(0.85, abs=EXACT)  # halfway in log
    assert mvm.interpolate_log(points, 4.0) == pytest.approx(0.9, abs=EXACT)
    assert mvm.interpolate_log(points, 8.0) == pytest.approx(0.91, abs=EXACT)
    assert mvm.interpolate_log(points, 0.5) is None
    assert mvm.interpolate_log(points, 17.0) is None
    assert mvm.interpolate_log([], 1.0) is None


# The pipeline -------------------------------------------------------------------------------
def _quick(tiny_fmnist):
    return {**mvm.QUICK, "overrides": {"batch_size": 16},
            "data_dir": str(tiny_fmnist), "verbose": 0}  # fmt: skip


@pytest.mark.large  # trains, converts and times two networks: ~30 s
def test_pipeline_end_to_end_and_rerun_reads_back(tiny_fmnist, tmp_path, monkeypatch):
    require("larq_compute_engine")
    runs, results = tmp_path / "runs", tmp_path / "results"
    kwargs = _quick(tiny_fmnist)
    original_build = train_module.build_model
    result = mvm.run(runs, results, **kwargs)
    assert train_module.build_model is original_build  # the sibling hook is undone

    names = {f"{mvm.RESULTS_STEM}.json", f"{mvm.RESULTS_STEM}.md", *mvm.PLOTS}
    assert {p.name for p in results.iterdir()} == names
    for png in mvm.PLOTS:
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((results / f"{mvm.RESULTS_STEM}.json").read_text())
    rows = {r["name"]: r for r in saved["rows"]}
    assert set(rows) == {"MeliusNetTinyNarrow", "MobileNetV1-0.25", "MobileNetV1-0.25 int8"}
    assert [rows[n]["kind"] for n in rows] == ["binary", "float", "int8"]
    for row in rows.values():
        size = len(Path(row["flatbuffer"]).read_bytes())
        assert row["flatbuffer_bytes"] == size
        assert row["flatbuffer_mib"] == pytest.approx(size / MIB, rel=EXACT)
        assert row["latency_ms"] > 0 and len(row["latency_medians_ms"]) == 1
        assert row["learning_rate"] == 0.006 and 0 <= row["test_accuracy"] <= 1
        assert row["ops"] == pytest.approx(row["bops"] / 64 + row["flops"], rel=EXACT)
    # each row's accounting is the model's own, at the row's bit width
    tiny = mvm.network_accounting(mvm.create_sibling("MeliusNetTinyNarrow"), kind="binary")
    assert rows["MeliusNetTinyNarrow"]["size_mib_paper"] == pytest.approx(
        tiny["size_mib_paper"], rel=EXACT
    )
    float_row, int8_row = rows["MobileNetV1-0.25"], rows["MobileNetV1-0.25 int8"]
    assert int8_row["size_mib_paper"] == pytest.approx(float_row["size_mib_paper"] / 4, rel=EXACT)
    assert int8_row["flatbuffer_bytes"] < float_row["flatbuffer_bytes"] / 2  # int8 weights
    assert int8_row["test_accuracy"] == int8_row["flatbuffer_test_accuracy"]
    assert float_row["test_accuracy"] == float_row["keras_test_accuracy"]
    table = (results / f"{mvm.RESULTS_STEM}.md").read_text()
    assert all(f"| {name} |" in table for name in rows)
    assert "{" not in table and "}" not in table  # every placeholder filled in

    # a re-run trains nothing and reports the same runs
    def no_training(*args, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    again = mvm.run(runs, results, **kwargs)
    keys = ("test_accuracy", "val_accuracy", "learning_rate", "flatbuffer_bytes", "ops")
    assert [{k: r[k] for k in keys} for r in again["rows"]] == [
        {k: r[k] for k in keys} for r in result["rows"]
    ]
    # other settings on the same runs directory are refused before anything trains
    with pytest.raises(ValueError, match="epochs"):
        mvm.run(runs, results, **{**kwargs, "epochs": 2})


# Bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("networks", "widths", "named"),
    [
        (["MeliusNetHuge"], [0.5], "'MeliusNetHuge'"),
        (["BinaryDenseNet28"], [0.5], "'BinaryDenseNet28'"),  # not a MeliusNet
        (["MeliusNetTiny"], [0.0], "0.0"),
        (["MeliusNetTiny"], [-0.5], "-0.5"),
        (["MeliusNetTiny"], [5.0], "5.0"),
        (["MeliusNetTiny"], [float("nan")], "nan"),
        (["MeliusNetTiny"], ["half"], "'half'"),
        (["MeliusNetTiny", "MeliusNetTiny"], [0.5], "MeliusNetTiny"),
        (["MeliusNetTiny"], [0.5, 0.5], "0.5"),
    ],
)
def test_bad_networks_and_widths_are_named_before_training(
    networks, widths, named, tmp_path, monkeypatch
):
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError) as err:
        mvm.run(tmp_path / "runs", tmp_path / "results", networks=networks, widths=widths)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("option", "named"),
    [({"lrs": [0.0]}, "0.0"), ({"lrs": []}, "empty"), ({"epochs": 0}, "epochs=0"),
     ({"seeds": []}, "seeds"), ({"calibration_images": 0}, "calibration_images=0")],
)  # fmt: skip
def test_bad_options_are_named_before_training(option, named, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=named):
        mvm.run(tmp_path / "runs", tmp_path / "results", **option)


def test_unknown_sibling_name_is_named():
    with pytest.raises(ValueError, match="'MeliusNetTinyHuge'"):
        mvm.create_sibling("MeliusNetTinyHuge")


def test_cli_reports_bad_input_in_one_line_and_passes_options(monkeypatch, capsys):
    assert mvm.main(["--networks", "Nope", "--widths", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'Nope'" in err and "\n" not in err

    seen = {}

    def fake_run(runs, results, **kw):
        seen.update(kw, runs=runs, results=results)
        raise ValueError("stop")

    monkeypatch.setattr(mvm.cli, "run", fake_run)
    mvm.main(["--widths", "0.125", "0.25", "--lrs", "0.01", "--epochs", "5", "--seeds", "1",
              "2", "--final-seeds", "3", "4", "--rounds", "7", "--set", "augment=none"])  # fmt: skip
    assert seen["widths"] == [0.125, 0.25] and seen["lrs"] == [0.01] and seen["epochs"] == 5
    assert seen["seeds"] == [1, 2] and seen["latency"]["rounds"] == 7
    assert seen["final_seeds"] == [3, 4]
    assert seen["overrides"] == ["augment=none"] and seen["networks"] == mvm.DEFAULT_NETWORKS
    assert (seen["runs"], seen["results"]) == ("runs/mvm", "docs/meliusnet_vs_mobilenet")
    mvm.main(["--quick"])
    assert (seen["runs"], seen["results"]) == ("runs/mvm_quick", "runs/mvm_quick/results")
    assert seen["epochs"] == 1 and seen["widths"] == mvm.QUICK["widths"]
