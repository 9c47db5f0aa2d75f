"""deploy: conversion reports, verification, host benchmark, device harness, CLI, bad input."""

import json
import os
import stat
import sys
from pathlib import Path

import larq as lq
import numpy as np
import pytest
from conftest import convert_cached, micro_bnn, require, small_model

import melius_larq
from melius_larq._compat import tf
from melius_larq.deploy import convert_model, op_inventory, write_atomic
from melius_larq.deploy.bench import (
    benchmark_lce,
    benchmark_tflite_float,
    float_tflite,
    timing_stats,
)
from melius_larq.deploy.device import DeviceError, parse_benchmark_output, run_device_benchmark
from melius_larq.deploy.flatbuffer import FlatbufferError, load_flatbuffer
from melius_larq.deploy.report import conversion_report
from melius_larq.deploy.verify import keras_outputs, verify_flatbuffer

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_deploy")

require("larq_compute_engine")
FIXTURES = Path(__file__).parent / "fixtures"


def _binary(filters, name, **kwargs):
    return lq.layers.QuantConv2D(
        filters, 3, padding="same", use_bias=False, input_quantizer="ste_sign",
        kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name=name, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mixed_model():
    """One accelerated binary conv, two that stay float for known reasons, and a QuantDense
    with a float input (binary dense layers with binary inputs become LceBconv2d)."""
    x = tf.keras.Input((8, 8, 64), name="image")
    y = _binary(64, "good", pad_values=1.0)(x)
    y = tf.keras.layers.BatchNormalization(name="bn")(y)
    y = _binary(64, "grouped16", pad_values=1.0, groups=4)(y)
    y = _binary(64, "minus_one", pad_values=-1.0)(y)
    y = tf.keras.layers.Conv2D(32, 1, name="float_pw")(y)
    y = tf.keras.layers.Flatten(name="flat")(y)
    y = lq.layers.QuantDense(
        10, input_quantizer=None, kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip", name="qdense",
    )(y)  # fmt: skip
    return tf.keras.Model(x, y, name="mixed")


@pytest.fixture(scope="module")
def mixed_buf(mixed_model):
    return convert_model(mixed_model)


def test_report_counts_ops_and_names_the_float_layers(mixed_model, mixed_buf):
    report = conversion_report(mixed_buf, keras_model=mixed_model)
    assert report["lce_ops"]["LceBconv2d"] == 1
    assert report["float_compute_ops"] == {"CONV_2D": 3, "FULLY_CONNECTED": 1}
    assert report["binary_layers"] == 4 and report["accelerated_binary_layers"] == 1
    reasons = {item["layer"]: item["reason"] for item in report["stayed_float"]}
    assert set(reasons) == {"grouped16", "minus_one", "qdense"}
    assert "16 input channels per group" in reasons["grouped16"]
    assert "pad_values=-1.0" in reasons["minus_one"]
    assert "QuantDense with a float input" in reasons["qdense"]
    assert report["bytes_by_weight_type"]["binary (bit-packed)"] == 64 * 3 * 3 * 2 * 4
    assert report["size_bytes"] == len(mixed_buf)
    json.dumps(report)  # serializable


def test_report_of_a_registry_model_has_exact_op_counts():
    model = small_model("MeliusNetA")  # converted once per worker (conftest.convert_cached)
    report = conversion_report(convert_cached(model), keras_model=model)
    spec = melius_larq.get_model_spec("MeliusNetA")
    assert report["ops"]["LceBconv2d"] == 2 * sum(spec.blocks)
    # stem: 1 + 4 + 8 per-group convs; transitions: 3 x 4 groups (GroupConv2D is split)
    assert report["ops"]["CONV_2D"] == 1 + 4 + 8 + 3 * 4
    assert report["ops"]["SPLIT"] == 2 + 3
    assert report["ops"]["TRANSPOSE"] == 3  # one ChannelShuffle per transition
    assert report["stayed_float"] == []


def test_xcore_target_reports_zero_padding():
    x = tf.keras.Input((8, 8, 32))
    model = tf.keras.Model(x, _binary(32, "zero_pad", pad_values=0.0)(x))
    report = conversion_report(
        convert_model(model, target="xcore"), keras_model=model, target="xcore"
    )
    assert report["lce_ops"]["LceBconv2d"] == 0
    assert "only converted for target='arm'" in report["stayed_float"][0]["reason"]


def test_model_without_binary_layers_warns_and_converts():
    x = tf.keras.Input((8, 8, 3))
    model = tf.keras.Model(x, tf.keras.layers.Conv2D(4, 3)(x))
    report = conversion_report(convert_model(model), keras_model=model)
    assert "no binary layers" in report["warning"]


def test_verify_passes_for_a_converted_model_and_fails_for_another():
    model = small_model("MeliusNetTiny")  # converted once per worker (conftest.convert_cached)
    buf = convert_cached(model)
    x = np.random.RandomState(0).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    result = verify_flatbuffer(buf, model, x)
    assert result["passed"] and result["top1_agreement"] == 1.0 and result["samples"] == 6
    assert "accuracy" not in result
    keras_out = keras_outputs(model, x)
    labels = np.array([0, 1, 2, 3, 4, 5])
    scored = verify_flatbuffer(buf, None, x, labels=labels, reference=keras_out)
    assert scored["keras_accuracy"] == np.mean(keras_out.argmax(1) == labels)
    assert scored["accuracy"] == scored["keras_accuracy"]  # identical top-1 on all six
    with pytest.raises(ValueError, match="Got 2 labels for 6 inputs"):
        verify_flatbuffer(buf, model, x, labels=labels[:2])
    with pytest.raises(ValueError, match="Got 3 reference outputs for 6 inputs"):
        verify_flatbuffer(buf, model, x, reference=keras_out[:3])
    other = melius_larq.MeliusNetTiny(input_shape=(32, 32, 3), num_classes=10,
                                      classifier_activation=None)  # fmt: skip
    assert not verify_flatbuffer(buf, other, x, min_agreement=1.0, max_abs_diff=1e-6)["passed"]


SUM_ORDER_RTOL = 1e-5  # float32 sums in another order, relative to the largest output


def test_keras_outputs_equal_predict_eagerly_and_batched(monkeypatch):
    from melius_larq.deploy import verify

    model = small_model("MeliusNetTiny")
    x = np.random.RandomState(1).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    want = model.predict(x, batch_size=2, verbose=0)
    eager = verify.keras_outputs(model, x, batch_size=2)  # 3 eager batches: 2 + 2 + 1
    monkeypatch.setattr(verify, "EAGER_SAMPLES", 4)
    called = []
    monkeypatch.setattr(model, "predict", lambda *a, **k: called.append(1) or want)
    assert verify.keras_outputs(model, x, batch_size=2) is want and called  # 5 > 4: predict
    # the same graph on the same inputs; only the order of float32 sums may differ (a few
    # float32 epsilons, 1.2e-7 each, of the largest output, which reaches about 50 here)
    np.testing.assert_allclose(eager, want, rtol=0, atol=SUM_ORDER_RTOL * np.abs(want).max())


def test_bench_smoke(mixed_model, mixed_buf):
    lce = benchmark_lce(mixed_buf, threads=(1, 2), runs=3, warmup=1)
    assert set(lce) == {1, 2} and all(r["runs"] == 3 and r["median_ms"] > 0 for r in lce.values())
    flt = benchmark_tflite_float(float_tflite(mixed_model), threads=(1,), runs=3, warmup=1)
    assert flt[1]["p90_ms"] >= flt[1]["median_ms"] > 0


def test_timing_stats():
    stats = timing_stats([0.003, 0.001, 0.002, 0.010])
    assert stats["median_ms"] == pytest.approx(2.5) and stats["p90_ms"] == pytest.approx(10.0)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["runs"] == 4


# ---------------------------------------------------------------- device harness


def test_parse_lce_benchmark_model_output():
    parsed = parse_benchmark_output(
        (FIXTURES / "lce_benchmark_model_meliusnet22_android.txt").read_text()
    )
    assert parsed["avg_ms"] == pytest.approx(110.704)
    assert parsed["min_ms"] == pytest.approx(109.975) and parsed["count"] == 50
    assert parsed["init_ms"] == pytest.approx(41.337) and parsed["memory_mb"] == pytest.approx(
        17.2031
    )
    by_type = {row["Node type"]: row for row in parsed["by_node_type"]}
    assert by_type["LceBconv2d"]["count"] == 34 and by_type["LceBconv2d"][
        "avg ms"
    ] == pytest.approx(77.154)
    assert parsed["run_order"][0]["name"] == "meliusnet22/stem_s0_pad/Pad"
    assert all(row["node type"] != "AllocateTensors" for row in parsed["run_order"])
    with pytest.raises(DeviceError, match="No benchmark timings"):
        parse_benchmark_output("ERROR: Could not open 'x.tflite'.\n")


def _fake_tool(directory: Path, name: str, script: str) -> str:
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


_FAKE = """
import sys, pathlib
log = pathlib.Path({log!r})
with log.open("a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
args = " ".join(sys.argv[1:])
if {devices!r} and args == "devices":
    print("List of devices attached\\n" + {devices!r})
elif "lce_benchmark_model --graph" in args:
    print(pathlib.Path({fixture!r}).read_text())
elif "uname -m" in args:
    print("aarch64")
"""


@pytest.fixture()
def tflite_file(tmp_path, mixed_buf):
    return str(write_atomic(mixed_buf, tmp_path / "mixed.tflite"))


@pytest.mark.parametrize("transport", ["adb", "ssh"])
def test_device_benchmark_with_a_fake_device(tmp_path, tflite_file, transport):
    log = tmp_path / "calls.log"
    fixture = FIXTURES / "lce_benchmark_model_meliusnet22_android.txt"
    binary = tmp_path / "lce_benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    script = _FAKE.format(log=str(log), fixture=str(fixture), devices="emulator-5554\tdevice")
    tools = {name: _fake_tool(tmp_path, name, script) for name in ("adb", "ssh", "scp")}
    result = run_device_benchmark(
        [tflite_file], binary=binary, transport=transport, host="pi@board", threads=(1, 4),
        num_runs=50, warmup_runs=5, **tools,
    )  # fmt: skip
    assert result["device"] == "aarch64" and len(result["rows"]) == 2
    assert [r["threads"] for r in result["rows"]] == [1, 4]
    assert result["rows"][0]["avg_ms"] == pytest.approx(110.704)
    calls = log.read_text()
    assert "--use_indirect_bgemm=true" in calls and "--enable_op_profiling=true" in calls
    assert "--use_xnnpack=true" in calls  # the default: XNNPACK for the float layers
    assert "--num_threads=4" in calls and "--num_runs=50" in calls
    if transport == "adb":
        assert "push" in calls and "/data/local/tmp/melius_larq/mixed.tflite" in calls
        assert "chmod +x /data/local/tmp/melius_larq/lce_benchmark_model" in calls
    else:
        assert "pi@board:/tmp/melius_larq/mixed.tflite" in calls


def test_device_benchmark_times_both_xnnpack_settings_when_asked(tmp_path, tflite_file):
    log = tmp_path / "calls.log"
    fixture = FIXTURES / "lce_benchmark_model_meliusnet22_android.txt"
    binary = tmp_path / "lce_benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    script = _FAKE.format(log=str(log), fixture=str(fixture), devices="emulator-5554\tdevice")
    result = run_device_benchmark([tflite_file], binary=binary, threads=(1,),
                                  xnnpack=(False, True), adb=_fake_tool(tmp_path, "adb", script))  # fmt: skip
    assert [(r["threads"], r["xnnpack"]) for r in result["rows"]] == [(1, False), (1, True)]
    runs = [c for c in result["commands"] if "--graph" in c]
    assert ["--use_xnnpack=false" in runs[0], "--use_xnnpack=true" in runs[1]] == [True, True]


def test_device_not_connected(tmp_path, tflite_file):
    script = _FAKE.format(log=str(tmp_path / "log"), fixture="", devices="")
    adb = _fake_tool(tmp_path, "adb", script)
    binary = tmp_path / "lce_benchmark_model"
    binary.write_bytes(b"x")
    with pytest.raises(DeviceError, match="no connected device"):
        run_device_benchmark([tflite_file], binary=binary, adb=adb)
    with pytest.raises(DeviceError, match="not found on PATH"):
        run_device_benchmark([tflite_file], binary=binary, adb=str(tmp_path / "no-adb"))
    with pytest.raises(ValueError, match="binary .* does not exist"):
        run_device_benchmark([tflite_file], binary=tmp_path / "missing", adb=adb)


# ---------------------------------------------------------------- bad input and CLI


def test_not_a_flatbuffer(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"this is not a flatbuffer")
    with pytest.raises(FlatbufferError, match="not a TFLite/LCE flatbuffer"):
        load_flatbuffer(path)
    with pytest.raises(FlatbufferError, match="does not exist"):
        op_inventory(tmp_path / "missing.tflite")


def test_convert_rejects_bad_arguments(mixed_model):
    with pytest.raises(ValueError, match="Expected `target` to be one of .* got 'gpu'"):
        convert_model(mixed_model, target="gpu")
    with pytest.raises(ValueError, match="inference_input_type"):
        convert_model(mixed_model, inference_input_type="uint8")
    dynamic = melius_larq.MeliusNet22(include_top=False)
    with pytest.raises(ValueError, match="static height"):
        convert_model(dynamic)


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        write_atomic(b"x", tmp_path / "missing_dir" / "m.tflite")
    with pytest.raises(TypeError):
        write_atomic(object(), tmp_path / "m.tflite")  # fails mid-write
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_name_and_leaves_nothing_on_failure(tmp_path):
    from melius_larq._io import atomic_path, write_text_atomic

    target = write_text_atomic("old\n", tmp_path / "m.keras")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name == "m.keras" and tmp != target
        tmp.write_text("partial")
        raise RuntimeError
    with pytest.raises(OSError, match="Nothing was written"), atomic_path(target):
        pass
    assert list(tmp_path.iterdir()) == [target] and target.read_text() == "old\n"
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert list(tmp_path.iterdir()) == [target] and target.read_text() == "new\n"


def test_save_figure_is_atomic_and_always_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from melius_larq._io import save_figure

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig = lambda path, **kw: Path(path).write_bytes(b"partial") and 1 / 0
    with pytest.raises(ZeroDivisionError):
        save_figure(fig, target)  # fails after writing part of the file
    assert not plt.fignum_exists(fig.number)
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert save_figure(fig, target) == target
    assert not plt.fignum_exists(fig.number)
    assert target.read_bytes().startswith(b"\x89PNG")


def _cli(*args):
    from melius_larq.cli import main

    return main([str(a) for a in args])


def test_cli_convert_report_verify(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.tflite"
    # the smallest registry model: every model's conversion is tested in test_lce_conversion
    assert _cli("convert", "MeliusNetTiny", "-o", out, "--input-size", 32, "--num-classes", 5,
                "--json", tmp_path / "r.json") == 0  # fmt: skip
    assert "LceBconv2d" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accelerated_binary_layers"] == report["binary_layers"] == 14
    assert _cli("report", out) == 0
    printed = capsys.readouterr().out  # the op inventory of the file, not of another model
    assert "| LceBconv2d | 14 |" in printed and "| LceQuantize | 14 |" in printed
    assert f"Flatbuffer size: {out.stat().st_size / 2**20:.3f} MiB" in printed
    # report rebuilds the registry model as convert built it (not at 224 px, 1000 classes)
    import melius_larq.deploy.report as report_module

    seen = []
    original = report_module.conversion_report
    monkeypatch.setattr(report_module, "conversion_report",
                        lambda buf, **kw: seen.append(kw["keras_model"]) or original(buf, **kw))  # fmt: skip
    assert _cli("report", out, "--keras", "MeliusNetTiny", "--input-size", 32, "--num-classes", 5,
                "--json", tmp_path / "again.json") == 0  # fmt: skip
    assert seen[0].input_shape == (None, 32, 32, 3) and seen[0].output_shape == (None, 5)
    assert json.loads((tmp_path / "again.json").read_text()) == report
    # verify on the test split of an image folder reports both runtimes' accuracy
    from PIL import Image

    for label in range(5):
        for split in ("train", "test"):
            (tmp_path / "images" / split / f"c{label}").mkdir(parents=True)
            image = Image.new("RGB", (40, 30), (50 * label,) * 3)
            image.save(tmp_path / "images" / split / f"c{label}" / "0.png")
    code = _cli("verify", out, "--keras", "MeliusNetTiny", "--input-size", 32, "--num-classes", 5,
                "--data", tmp_path / "images", "--json", tmp_path / "v.json")  # fmt: skip
    verified = json.loads((tmp_path / "v.json").read_text())
    assert code == 0 and verified["samples"] == 5 and "accuracy" in verified, verified
    capsys.readouterr()
    assert _cli("report", out, "--input-size", 32) == 2
    assert "describe the --keras model; pass --keras" in capsys.readouterr().err
    # a .keras file converts and verifies (any Keras model: the micro network); logits, not
    # saturated softmax outputs, so that two random models really differ
    for name, seed in (("c", 0), ("d", 1)):
        tf.keras.utils.set_random_seed(seed)
        micro_bnn(input_shape=(32, 32, 3), num_classes=5,
                  classifier_activation=None).save(tmp_path / f"{name}.keras")  # fmt: skip
    assert _cli("convert", tmp_path / "c.keras", "-o", out) == 0
    assert _cli("verify", out, "--keras", tmp_path / "c.keras", "--samples", 4) == 0
    assert _cli("verify", out, "--keras", tmp_path / "d.keras", "--samples", 4,
                "--max-abs-diff", 1e-3) == 1  # fmt: skip


def test_cli_bad_input_exits_non_zero(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert _cli("convert", text, "-o", tmp_path / "x.tflite") == 2
    assert "is not a Keras model" in capsys.readouterr().err
    assert _cli("convert", "NoSuchNet", "-o", tmp_path / "x.tflite") == 2
    assert _cli("report", text) == 2
    assert "not a TFLite/LCE flatbuffer" in capsys.readouterr().err
    assert (
        _cli("convert", "MeliusNet22", "-o", tmp_path / "nodir" / "x.tflite", "--input-size", 32)
        == 2
    )
    assert not (tmp_path / "nodir").exists()
    assert _cli("convert", "MeliusNet22", "-o", tmp_path / "x.tflite", "--int8") == 2
    assert "calibration" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_lce_not_importable_gives_an_install_hint(monkeypatch, mixed_model):
    import importlib

    from melius_larq.deploy import _lce

    real = importlib.import_module

    def fake(name, *args):
        if name == "larq_compute_engine":
            raise ImportError("No module named 'larq_compute_engine'")
        return real(name, *args)

    monkeypatch.setattr(_lce.importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"pip install 'larq-compute-engine==0.16.0'"):
        convert_model(mixed_model)
