"""The options of ``convert``, ``report``, ``verify``, ``bench``, ``device-bench`` and
``compress`` on their success paths, with what the user gets, and their usage errors.

One small MeliusNetTiny (28x28x1, logits) is saved once as ``.keras`` and ``.h5`` and
converted once, from the ``.h5`` file; the commands run in-process. Tests of an option that
only routes a value to the converter replace the converter by a spy.
"""

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fashion_mnist_or_skip, trained_like

import melius_larq
from melius_larq._compat import tf
from melius_larq.cli import main
from melius_larq.deploy.verify import keras_outputs

pytest.importorskip("larq_compute_engine")

FIXTURES = Path(__file__).parent / "fixtures"
# LCE and Keras on the same binary network: integer popcounts, and float32 rounding of the
# float layers (stem, BatchNorm folds, classifier) of a few hundred terms each, relative to
# the largest logit.
LCE_RTOL = 1e-4


def _run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``{"model", "keras", "h5", "tflite", "dir"}``: one model as .keras and .h5 files and its
    flatbuffer, converted from the .h5 file by ``convert``."""
    root = tmp_path_factory.mktemp("cli_options")
    tf.keras.utils.set_random_seed(0)
    model = melius_larq.create_model("MeliusNetTiny", input_shape=(28, 28, 1), num_classes=10,
                                     stem="small", classifier_activation=None)  # fmt: skip
    trained_like(model)
    paths = {"model": model, "dir": root, "keras": root / "m.keras", "h5": root / "m.h5",
             "tflite": root / "m.tflite"}  # fmt: skip
    model.save(paths["keras"])
    model.save(paths["h5"])
    assert _run("convert", paths["h5"], "-o", paths["tflite"], "--json", root / "c.json") == 0
    return paths


def _lce_matches_keras(tflite, model, n=4):
    from melius_larq.deploy.verify import run_lce

    x = np.random.default_rng(1).uniform(-1, 1, (n, *model.input_shape[1:])).astype(np.float32)
    want = model(x, training=False).numpy()  # eager: no predict function to trace
    np.testing.assert_allclose(run_lce(str(tflite), x), want, rtol=0,
                               atol=LCE_RTOL * np.abs(want).max())  # fmt: skip


# ------------------------------------------------------------------------------- convert


def test_convert_from_h5(saved):
    report = json.loads((saved["dir"] / "c.json").read_text())
    assert report["accelerated_binary_layers"] == report["binary_layers"] > 0
    _lce_matches_keras(saved["tflite"], saved["model"])


def test_convert_from_a_saved_model_directory(saved, tmp_path, monkeypatch, capsys):
    """A SavedModel directory loads as the same model (the conversion is the one of the .h5
    file; a small larq model keeps the SavedModel export short)."""
    import larq as lq

    import melius_larq.deploy.convert as convert

    inputs = tf.keras.Input((28, 28, 1))
    x = lq.layers.QuantConv2D(8, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip")(inputs)  # fmt: skip
    model = tf.keras.Model(inputs, tf.keras.layers.BatchNormalization()(x))
    trained_like(model)
    model.save(tmp_path / "saved", save_format="tf")
    loaded = []
    converted = saved["tflite"].read_bytes()
    monkeypatch.setattr(convert, "convert_model", lambda m, **k: loaded.append(m) or converted)
    out = tmp_path / "from_saved_model.tflite"
    assert _run("convert", tmp_path / "saved", "-o", out) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.read_bytes() == converted
    x = np.random.default_rng(2).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(keras_outputs(loaded[0], x), keras_outputs(model, x))


def test_convert_target_reaches_the_converter(saved, tmp_path, monkeypatch):
    import melius_larq.deploy.convert as convert

    targets = []
    converted = saved["tflite"].read_bytes()  # what the converter returns is not under test
    monkeypatch.setattr(convert, "convert_model",
                        lambda *a, **k: targets.append(k["target"]) or converted)  # fmt: skip
    out = tmp_path / "x.tflite"
    assert _run("convert", saved["keras"], "-o", out, "--target", "xcore") == 0
    assert targets == ["xcore"] and out.read_bytes() == converted


def test_convert_model_input_shape_fixes_a_model_of_unknown_size():
    """A fully convolutional model of unknown height and width converts at the size asked."""
    import larq as lq

    from melius_larq.deploy import convert_model
    from melius_larq.deploy.flatbuffer import input_shape

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((None, None, 32))
    x = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              use_bias=False)(inputs)  # fmt: skip
    x = tf.keras.layers.Dense(4)(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, x)
    with pytest.raises(ValueError, match="pass input_shape"):
        convert_model(model)
    buf = convert_model(model, input_shape=(12, 16, 32))
    assert input_shape(buf) == (12, 16, 32)
    from melius_larq.deploy.verify import run_lce

    x = np.random.default_rng(0).uniform(-1, 1, (3, 12, 16, 32)).astype(np.float32)
    want = keras_outputs(model, x)
    np.testing.assert_allclose(run_lce(buf, x), want, rtol=0, atol=LCE_RTOL * np.abs(want).max())


@pytest.fixture()
def keras_loaded_once(monkeypatch):
    """Each Keras model file is loaded once however many commands name it."""
    import functools

    from melius_larq.cli import deployment

    monkeypatch.setattr(deployment, "_load_keras", functools.cache(deployment._load_keras))


@pytest.mark.large
def test_convert_int8_options(saved, tmp_path, monkeypatch, capsys):
    """--int8-io, --calibration fashion_mnist, --calibration-samples, --qat-epochs/--qat-samples
    each reach convert_int8, and the file takes and gives int8."""
    from melius_larq.deploy import int8
    from melius_larq.deploy.verify import lce_interpreter

    images, _ = fashion_mnist_or_skip("train")
    seen = {}
    real = int8.convert_int8

    def spy(model, calibration, **kwargs):
        seen.update(kwargs, calibration=calibration)
        return real(model, calibration, **kwargs)

    monkeypatch.setattr(int8, "convert_int8", spy)
    out = tmp_path / "q.tflite"
    assert _run("convert", saved["keras"], "-o", out, "--int8", "--int8-io", "--calibration",
                "fashion_mnist", "--calibration-samples", 24, "--qat-epochs", 1,
                "--qat-samples", 32, "--json", tmp_path / "q.json") == 0  # fmt: skip
    assert seen["calibration"].shape == (24, 28, 28, 1)
    x, y = seen["qat_data"]
    assert (x.shape, y.shape, seen["qat_epochs"]) == ((32, 28, 28, 1), (32,), 1)
    assert seen["int8_io"] is True
    # the first Fashion-MNIST training images, preprocessed as for training
    from melius_larq.zoo.data import preprocess_fashion_mnist

    np.testing.assert_array_equal(seen["calibration"], preprocess_fashion_mnist(images[:24]))
    interpreter = lce_interpreter(out.read_bytes())
    assert interpreter.input_types == [np.int8] and interpreter.output_types == [np.int8]
    assert json.loads((tmp_path / "q.json").read_text())["size_bytes"] == out.stat().st_size


# ------------------------------------------------------------------------ report, verify


def test_report_with_keras_and_json(saved, tmp_path, capsys, keras_loaded_once):
    out = tmp_path / "r.json"
    assert _run("report", saved["tflite"], "--keras", saved["keras"], "--json", out) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    n = sum(1 for layer in saved["model"].layers if "binary" in type(layer).__name__.lower()
            or type(layer).__name__ == "QuantConv2D")  # fmt: skip
    assert report["binary_layers"] == report["accelerated_binary_layers"] == n
    assert report["stayed_float"] == [] and report["size_bytes"] == saved["tflite"].stat().st_size
    assert f"Binary layers in Keras: {n}; run as LceBconv2d: {n}" in printed
    # without --keras there is nothing to compare the layers with
    assert _run("report", saved["tflite"], "--json", out) == 0
    assert "binary_layers" not in json.loads(out.read_text())


def test_verify_data_seed_json_and_min_agreement(saved, tmp_path, capsys, keras_loaded_once):
    from melius_larq.zoo.data import DataError, load_fashion_mnist

    base = ["verify", saved["tflite"], "--keras", saved["keras"], "--samples", 6]
    results = []
    for seed in (1, 1, 2):
        assert _run(*base, "--seed", seed, "--json", tmp_path / "v.json") == 0
        results.append(json.loads((tmp_path / "v.json").read_text()))
    assert results[0] == results[1] != results[2]  # the seed draws the random inputs
    assert results[0]["samples"] == 6 and results[0]["passed"] is True
    # another model: the top-1 agreement is low; --min-agreement decides the exit code
    tf.keras.utils.set_random_seed(5)
    other = melius_larq.create_model("MeliusNetTiny", input_shape=(28, 28, 1), num_classes=10,
                                     stem="small", classifier_activation=None)  # fmt: skip
    trained_like(other, seed=5)
    other.save(tmp_path / "other.keras")
    argv = ["verify", saved["tflite"], "--keras", tmp_path / "other.keras", "--samples", 20]
    assert _run(*argv, "--json", tmp_path / "o.json") == 1
    agreement = json.loads((tmp_path / "o.json").read_text())["top1_agreement"]
    assert agreement < 0.999
    assert _run(*argv, "--min-agreement", agreement) == 0
    capsys.readouterr()
    try:
        load_fashion_mnist("test")
    except DataError:
        return
    assert _run(*base, "--data", "fashion_mnist", "--json", tmp_path / "f.json") == 0
    data = json.loads((tmp_path / "f.json").read_text())
    assert data["samples"] == 6 and 0 <= data["accuracy"] <= 1
    assert data["accuracy"] == data["keras_accuracy"]  # the same predictions


# ---------------------------------------------------------------------------------- bench


def test_bench_xnnpack_and_keras(saved, tmp_path, keras_loaded_once):
    out = tmp_path / "b.json"
    common = ["bench", saved["tflite"], "--threads", 1, "--runs", 1, "--warmup", 0, "--json", out]
    assert _run(*common, "--xnnpack", "off", "--keras", saved["keras"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["runtime"]) for r in rows] == [
        ("m", "LCE (indirect BGEMM)"), ("m (float)", "TFLite float (XNNPACK)"),
    ]  # fmt: skip
    assert _run(*common, "--xnnpack", "on") == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["LCE (indirect BGEMM + XNNPACK)"]
    assert all(r["median_ms"] > 0 for r in rows)


@pytest.mark.large
def test_bench_mobilenet(tmp_path):
    """MobileNet-v1 at the flatbuffer's input size (MobileNet takes at least 32x32)."""
    path = tmp_path / "t.tflite"
    assert _run("convert", "MeliusNetTiny", "-o", path, "--input-size", 32) == 0
    out = tmp_path / "b.json"
    assert _run("bench", path, "--threads", 1, "--runs", 1, "--warmup", 0, "--xnnpack", "off",
                "--mobilenet", "--json", out) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["t", "MobileNet-v1 1.0"]


def test_bench_mobilenet_on_a_small_input_fails_first(saved, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert _run("bench", saved["tflite"], "--mobilenet", "--json", out) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"error: --mobilenet needs inputs of at least 32x32, but {str(saved['tflite'])!r} "
        "takes 28x28x1."
    ]
    assert captured.out == "" and not out.exists()  # nothing timed, nothing written


# --------------------------------------------------------------------------- device-bench

_FAKE_ADB = """
import sys, pathlib
with pathlib.Path({log!r}).open("a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[-1:] == ["devices"]:
    print("List of devices attached\\nSERIAL1\\tdevice\\nSERIAL2\\tdevice")
elif "lce_benchmark_model --graph" in " ".join(args):
    print(pathlib.Path({fixture!r}).read_text())
elif "uname -m" in args[-1:]:
    print("aarch64")
"""


def test_device_bench_serial_and_no_profile(saved, tmp_path, capsys):
    log = tmp_path / "adb.log"
    adb = tmp_path / "adb"
    fixture = FIXTURES / "lce_benchmark_model_meliusnet22_android.txt"
    adb.write_text(f"#!{sys.executable}\n" + _FAKE_ADB.format(log=str(log), fixture=str(fixture)))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    binary = tmp_path / "lce_benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    out = tmp_path / "d.json"
    assert _run("device-bench", saved["tflite"], "--binary", binary, "--adb", adb, "--serial",
                "SERIAL2", "--no-profile", "--threads", "1", "--json", out) == 0  # fmt: skip
    calls = log.read_text().splitlines()
    assert calls[0] == "devices"
    assert calls[1:] and all(call.startswith("-s SERIAL2 ") for call in calls[1:])
    runs = [call for call in calls if "--graph" in call]
    assert len(runs) == 1 and "--enable_op_profiling=false" in runs[0]
    result = json.loads(out.read_text())
    assert result["device"] == "aarch64" and [r["threads"] for r in result["rows"]] == [1]
    # a serial adb does not list is refused before anything is pushed
    log.unlink()
    assert _run("device-bench", saved["tflite"], "--binary", binary, "--adb", adb,
                "--serial", "SERIAL9") == 2  # fmt: skip
    assert "Device 'SERIAL9' is not connected" in capsys.readouterr().err
    assert log.read_text().splitlines() == ["devices"]


# ------------------------------------------------------------------------------- compress


def _cnn(path):
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((12, 12, 3))
    x = tf.keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = tf.keras.layers.Dense(10, name="fc")(tf.keras.layers.Flatten()(x))
    model = tf.keras.Model(inputs, x)
    # channels of different magnitudes: one scale per layer differs from one per channel
    kernel = model.get_layer("conv").kernel
    kernel.assign(kernel * np.linspace(0.2, 2.0, 16, dtype=np.float32))
    model.save(path)
    return model


def test_compress_plain_layer_granularity_on_selected_layers(tmp_path):
    model = _cnn(tmp_path / "in.keras")
    out = tmp_path / "out.keras"
    assert _run("compress", tmp_path / "in.keras", "--method", "plain", "-j", 4,
                "--granularity", "layer", "--layers", "c*", "-o", out,
                "--json", tmp_path / "r.json") == 0  # fmt: skip
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["method"], report["granularity"]) == ("plain", "layer")
    assert [layer["name"] for layer in report["layers"]] == ["conv"]
    assert {e["name"]: e["reason"] for e in report["excluded"]}["fc"] == "not selected"
    result = tf.keras.models.load_model(out, compile=False)
    # one scale for the whole kernel: max|w| / (2^(b-1) - 1) times integers in [-7, 7]
    original = model.get_layer("conv").kernel.numpy()
    levels = result.get_layer("conv").kernel.numpy() / (np.abs(original).max() / 7)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert np.abs(levels).max() == pytest.approx(7) and len(np.unique(np.round(levels))) <= 15
    np.testing.assert_array_equal(result.get_layer("fc").kernel.numpy(),
                                  model.get_layer("fc").kernel.numpy())  # fmt: skip


def test_compress_cbd_exclude_and_fallback(tmp_path):
    _cnn(tmp_path / "in.keras")
    reports = {}
    for fallback in ("layer", "plane"):
        out = tmp_path / f"{fallback}.keras"
        assert _run("compress", tmp_path / "in.keras", "-j", 4, "--bottleneck", 0.5,
                    "--exclude", "fc", "--fallback", fallback, "-o", out,
                    "--json", tmp_path / f"{fallback}.json") == 0  # fmt: skip
        reports[fallback] = json.loads((tmp_path / f"{fallback}.json").read_text())
        assert tf.keras.models.load_model(out, compile=False).get_layer("conv") is not None
    for fallback, report in reports.items():
        assert report["fallback"] == fallback
        assert [layer["name"] for layer in report["layers"]] == ["conv"]
        assert {e["name"]: e["reason"] for e in report["excluded"]}["fc"] == "excluded by name"
    # falling back plane by plane never stores more than falling back for the whole layer
    assert reports["plane"]["total_bits"] <= reports["layer"]["total_bits"]


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "{keras}", "-j", "4", "--bottleneck", "0.5", "--fallback", "row", "-o", "o.keras"], "invalid choice: 'row'"),
        (["compress", "{keras}", "-j", "4", "--bottleneck", "0.5", "--layers", "nope*", "-o", "o.keras"], "No layer with weights matches 'nope*'"),
        (["compress", "{keras}", "-j", "4", "--bottleneck", "0.5", "--exclude", "nope", "-o", "o.keras"], "No layer with weights matches 'nope'"),
        (["verify", "{tflite}", "--keras", "{keras}", "--seed", "-1"], ">= 0, got '-1'"),
        (["verify", "{tflite}", "--keras", "{keras}", "--min-agreement", "-0.5"], "[0, 1], got '-0.5'"),
        (["verify", "{tflite}", "--keras", "{keras}", "--data", "fashion_mnist", "--data-dir", "{missing}"], "missing"),
        (["report", "{tflite}", "--keras", "{missing}"], "neither an existing model file nor a registry model"),
        (["bench", "{tflite}", "--keras", "{missing}", "--runs", "1"], "neither an existing model file"),
        (["convert", "{keras}", "-o", "x.tflite", "--int8", "--calibration", "{missing}.npy"], "does not exist"),
        (["convert", "{keras}", "-o", "x.tflite", "--int8", "--calibration", "cifar100"], "cifar100"),
        (["convert", "{keras}", "-o", "x.tflite", "--int8", "--calibration", "{npy}", "--qat-epochs", "1"], "needs labelled images"),
        (["convert", "{keras}", "-o", "x.tflite", "--int8", "--calibration-samples", "0"], ">= 1, got '0'"),
        (["device-bench", "{tflite}", "--binary", "{keras}", "--transport", "ssh", "--host", "pi@b", "--ssh", "{missing}", "--serial", "S1"], "--serial applies to --transport adb"),
    ],
)  # fmt: skip
def test_option_usage_errors_name_the_value_and_write_nothing(argv, message, saved, tmp_path,
                                                               monkeypatch, capsys):  # fmt: skip
    np.save(tmp_path / "inputs.npy", np.zeros((2, 28, 28, 1), np.float32))
    values = {"keras": saved["keras"], "tflite": saved["tflite"], "missing": tmp_path / "missing",
              "npy": tmp_path / "inputs.npy"}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    capsys.readouterr()
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "usage:" not in err:  # argparse prints usage first; our errors are one line
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert sorted(tmp_path.iterdir()) == before
