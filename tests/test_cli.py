"""The one command line: every verb, its usage errors, its choices and the exit codes."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import fashion_mnist_or_skip

import melius_larq
from melius_larq._compat import tf
from melius_larq.cli import build_parser, main

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_cli")


def _run(*args) -> int:
    return main([str(a) for a in args])


def _subparser(name):
    parser = build_parser()
    action = next(
        a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0]))
    )
    return action.choices[name]


# (argv before the option, option, the values users may give) per choice-taking option; the
# values are the package's own: a table missing one, or a parser accepting another, fails.
CHOICES = [
    (["summary", "MeliusNet22"], "--stem", ["grouped", "imagenet", "thumbnail", "small"]),
    (["summary", "MeliusNet22"], "--preset", ["lce", "reference", "larq_zoo"]),
    (["convert", "m.keras", "-o", "m.tflite"], "--target", ["arm", "xcore"]),
    (["report", "m.tflite"], "--target", ["arm", "xcore"]),
    (["train", "meliusnettiny_fashion_mnist", "--out", "run"], "--strategy",
     ["default", "mirrored", "multi-worker"]),
    (["eval", "m.keras"], "--dataset", ["fashion_mnist", "cifar10", "imagenet2012"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "option", "values"), CHOICES, ids=[c[1] for c in CHOICES])
def test_choice_options_accept_their_values_and_name_a_wrong_one(argv, option, values, capsys):
    parser = build_parser()
    dest = option.lstrip("-").replace("-", "_")
    for value in values:
        assert getattr(parser.parse_args([*argv, option, value]), dest) == value
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([*argv, option, "nonsense"])
    assert exit_.value.code == 2
    assert f"invalid choice: 'nonsense' (choose from {', '.join(map(repr, values))})" in (
        capsys.readouterr().err
    )


def test_verify_data_takes_random_or_a_dataset_and_names_a_wrong_value(capsys):
    """(a folder of images too: tests/test_deploy.py verifies on one)"""
    parser = build_parser()
    argv = ["verify", "m.tflite", "--keras", "m.keras", "--data"]
    for value in ("random", "fashion_mnist", "cifar10"):
        assert parser.parse_args([*argv, value]).data == value
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "mnist"])
    assert "fashion_mnist, cifar10 or a folder of images" in capsys.readouterr().err


def test_every_recipe_is_a_train_choice():
    from melius_larq.zoo.recipes import RECIPES

    parser = build_parser()
    assert len(RECIPES) >= 5
    for name in RECIPES:
        assert parser.parse_args(["train", name, "--out", "run"]).recipe == name


def test_one_parser_has_every_verb():
    parser = build_parser()
    verbs = set(parser._subparsers._group_actions[0].choices)
    assert verbs == {
        "list", "summary", "convert", "report", "verify", "bench", "device-bench",
        "recipes", "train", "eval", "demo", "compress",
    }  # fmt: skip


def test_list(capsys):
    assert _run("list") == 0
    assert capsys.readouterr().out.split() == melius_larq.list_models()
    assert _run("list", "BinaryDense*") == 0
    assert capsys.readouterr().out.split() == [
        "BinaryDenseNet28",
        "BinaryDenseNet37",
        "BinaryDenseNet45",
    ]


def test_summary_json_matches_the_library(capsys):
    assert _run("summary", "MeliusNetTiny", "--stem", "small", "--input-size", 28, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    model = melius_larq.create_model("MeliusNetTiny", stem="small", input_shape=(28, 28, 3))
    expected = melius_larq.summary(model, print_fn=None)
    assert printed["total_params"] == expected["total_params"] > 0
    assert printed["binary_params"] == expected["binary_params"] > 0
    assert printed["bops"] == expected["bops"]


def test_recipes(capsys):
    from melius_larq.zoo.recipes import RECIPES

    assert _run("recipes") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)


@pytest.fixture(scope="module")
def tiny_flatbuffer(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.tflite"
    assert (
        _run("convert", "MeliusNetTiny", "-o", path, "--input-size", 28, "--num-classes", 10) == 0
    )
    return path


def test_bench(tiny_flatbuffer, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert _run("bench", tiny_flatbuffer, "--threads", "1", "--runs", 2, "--warmup", 0,
                "--json", out, "--markdown", tmp_path / "b.md") == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert [(r["threads"], r["runtime"]) for r in report["rows"]] == [
        (1, "LCE (indirect BGEMM)"),
        (1, "LCE (indirect BGEMM + XNNPACK)"),
    ]  # --xnnpack both by default
    assert all(r["median_ms"] > 0 for r in report["rows"])
    assert "tiny" in (tmp_path / "b.md").read_text()


def test_verify_a_registry_name_against_the_model_convert_built(tiny_flatbuffer, capsys):
    args = ["--keras", "MeliusNetTiny", "--input-size", 28, "--num-classes", 10, "--samples", 4]
    assert _run("verify", tiny_flatbuffer, *args, "--max-abs-diff", 1e-4) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    # another seed's weights are another model: the same check fails
    import melius_larq.deploy.convert as convert

    convert.REGISTRY_SEED += 1
    try:
        assert _run("verify", tiny_flatbuffer, *args, "--max-abs-diff", 1e-4) == 1
    finally:
        convert.REGISTRY_SEED -= 1


def test_eval_of_a_saved_model(tmp_path, capsys):
    fashion_mnist_or_skip("test")
    # a model that always answers class 3 has accuracy = the share of class 3 (10 %)
    inputs = tf.keras.Input((28, 28, 1))
    outputs = tf.keras.layers.Dense(10, kernel_initializer="zeros", bias_initializer=tf.keras
                                    .initializers.Constant(np.eye(10)[3]))(tf.keras.layers.Flatten()(inputs))  # fmt: skip
    tf.keras.Model(inputs, outputs).save(tmp_path / "m.keras")
    assert _run("eval", tmp_path / "m.keras") == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"test_accuracy": pytest.approx(0.1), "samples": 10_000}


def test_interrupt_exits_130(monkeypatch, capsys):
    from melius_larq.cli import models

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_cmd_list", interrupted)
    assert _run("list") == 130
    assert "interrupted" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert _run("--help") == 0
    assert "compress" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["list", "a", "b"], "unrecognized arguments: b"),
        (["summary"], "required: model"),
        (["summary", "MeliusNet22", "--stem", "huge"], "invalid choice: 'huge'"),
        (["summary", "MeliusNet22", "--input-size", "0"], "expected an integer >= 1, got '0'"),
        (["convert", "MeliusNet22"], "-o/--output"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--target", "gpu"], "invalid choice: 'gpu'"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--calibration-samples", "-5"], "got '-5'"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--qat-epochs", "1"], "--qat-epochs 1 needs --int8"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--qat-epochs", "-1"], ">= 0, got '-1'"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--int8-io"], "--int8-io needs --int8"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--lce-int8-outputs"], "--lce-int8-outputs needs --int8"),
        (["convert", "MeliusNet22", "-o", "x.tflite", "--num-classes", "2.5"], "expected an integer, got '2.5'"),
        (["report"], "required: tflite"),
        (["report", "x.tflite", "--target", "gpu"], "invalid choice: 'gpu'"),
        (["verify", "x.tflite"], "--keras"),
        (["verify", "x.tflite", "--keras", "m.keras", "--min-agreement", "1.5"], "[0, 1], got '1.5'"),
        (["verify", "x.tflite", "--keras", "m.keras", "--samples", "0"], ">= 1, got '0'"),
        (["verify", "x.tflite", "--keras", "m.keras", "--max-abs-diff", "nan"], "finite number, got 'nan'"),
        (["verify", "x.tflite", "--keras", "m.keras", "--data", "mnist"], "or a folder of images with one sub-folder per class, got 'mnist'"),
        (["bench", "x.tflite", "--threads", "1,0"], ">= 1, got '0'"),
        (["bench", "x.tflite", "--runs", "abc"], "expected an integer, got 'abc'"),
        (["bench", "x.tflite", "--warmup", "-1"], ">= 0, got '-1'"),
        (["device-bench", "x.tflite"], "--binary"),
        (["device-bench", "x.tflite", "--binary", "b", "--transport", "usb"], "invalid choice: 'usb'"),
        (["device-bench", "x.tflite", "--binary", "b", "--threads", ""], "comma-separated integers"),
        (["device-bench", "x.tflite", "--binary", "b", "--xnnpack", "maybe"], "invalid choice: 'maybe'"),
        (["bench", "x.tflite", "--xnnpack", "yes"], "invalid choice: 'yes'"),
        (["recipes", "extra"], "unrecognized arguments: extra"),
        (["train", "no_such_recipe", "--out", "r"], "invalid choice: 'no_such_recipe'"),
        (["train", "meliusnettiny_fashion_mnist"], "--out"),
        (["train", "meliusnettiny_fashion_mnist", "--out", "r", "--strategy", "tpu"], "invalid choice: 'tpu'"),
        (["train", "meliusnettiny_fashion_mnist", "--out", "r", "--set", "kd_weight=2"], "kd_weight=2.0 is outside [0, 1]"),
        (["train", "meliusnettiny_fashion_mnist", "--out", "r", "--set", "kd_temperature=0"], "kd_temperature=0.0 must be"),
        (["train", "meliusnettiny_fashion_mnist", "--out", "r", "--set", "validation_fraction=0.7"], "validation_fraction=0.7"),
        (["train", "meliusnettiny_fashion_mnist", "--out", "r", "--set", "teacher=missing.keras"], "teacher='missing.keras' is neither"),
        (["train", "meliusnettiny_fashion_mnist", "--out", "r", "--set", "width=0.5"], "width=0.5 applies to the float models"),
        (["eval"], "required: model"),
        (["eval", "m.keras", "--split", "dev"], "invalid choice: 'dev'"),
        (["eval", "m.keras", "--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["demo", "--verbose", "-1"], ">= 0, got '-1'"),
        (["compress", "m.keras", "--bits", "9", "--bottleneck", "0.2", "-o", "o.keras"], "invalid choice: 9"),
        (["compress", "m.keras", "--bits", "4", "--bottleneck", "2", "-o", "o.keras"], "(0, 1], got '2'"),
        (["compress", "m.keras", "--bits", "4", "--bottleneck", "0", "-o", "o.keras"], "> 0, got '0'"),
        (["compress", "m.keras", "--method", "round", "--bits", "4", "-o", "o.keras"], "invalid choice: 'round'"),
        (["compress", "m.keras", "--bits", "4", "-o", "o.keras"], "--method cbd needs --bottleneck"),
        (["compress", "m.keras", "--method", "plain", "--bits", "4", "--store", "x.cbd", "-o", "o.keras"], "--store applies to --method cbd only"),
        (["compress", "m.keras", "--bits", "4", "--bottleneck", "0.2", "--granularity", "layer", "-o", "o.keras"], "--granularity applies to --method plain only"),
        (["compress", "m.keras", "--method", "plain", "--bits", "4", "--granularity", "tensor", "-o", "o.keras"], "invalid choice: 'tensor'"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_and_name_the_value(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("layout", "message"),
    [("empty", "nor images in one sub-folder per class"), ("one_class", "has one class ('shirt')"),
     ("broken", "broken.png"), ("missing", "is not a directory")],
)  # fmt: skip
def test_bad_image_folders_exit_2_and_leave_no_run(layout, message, tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    if layout != "missing":
        data.mkdir()
    if layout in ("one_class", "broken"):
        for name in ("shirt", "shoe")[: 1 if layout == "one_class" else 2]:
            (data / name).mkdir()
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / name / "0.png")
    if layout == "broken":
        (data / "shoe" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    assert _run("train", "meliusnettiny_fashion_mnist", "--out", out, "--data-dir", data) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def _small_cnn(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((12, 12, 3))
    x = tf.keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(10, name="fc")(x)
    return tf.keras.Model(inputs, outputs)


class TestCompress:
    def test_compress_writes_the_model_store_json_and_tflite(self, tmp_path, capsys):
        from melius_larq.cbd import load_cbd

        source = tmp_path / "in.keras"
        _small_cnn().save(source)
        out = tmp_path / "out.keras"
        code = _run("compress", source, "--bits", 5, "--bottleneck", 0.2, "-o", out,
                    "--store", tmp_path / "out.cbd", "--json", tmp_path / "r.json",
                    "--tflite", tmp_path / "out.tflite")  # fmt: skip
        assert code == 0
        printed = capsys.readouterr().out
        assert "CBD with J=5, bottleneck=0.2" in printed and "| fc |" in printed
        assert "int8 kernels" in printed
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["bits"] == 5 and [layer["name"] for layer in report["layers"]] == [
            "conv",
            "fc",
        ]
        reloaded = tf.keras.models.load_model(out, compile=False)
        stored = load_cbd(tmp_path / "out.cbd").kernels()
        np.testing.assert_array_equal(reloaded.get_layer("fc").kernel.numpy(), stored["fc"])
        # the int8 TFLite export computes what the compressed Keras model computes
        interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "out.tflite"))
        interpreter.allocate_tensors()
        x = np.random.RandomState(0).uniform(-1, 1, (1, 12, 12, 3)).astype(np.float32)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        want = reloaded(x).numpy()
        # int8 kernels are exact (J <= 7); only float32 summation order differs
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "in.keras", "out.cbd", "out.keras", "out.tflite", "r.json",
        ]  # fmt: skip

    def test_missing_model(self, tmp_path, capsys):
        code = _run("compress", tmp_path / "nope.keras", "-j", 4, "--bottleneck", 0.1,
                    "-o", tmp_path / "o.keras")  # fmt: skip
        assert code == 2
        assert re.search(r"error: Model file .*nope.keras' does not exist", capsys.readouterr().err)
        assert list(tmp_path.iterdir()) == []


def test_python_dash_m_melius_larq():
    result = subprocess.run(
        [sys.executable, "-m", "melius_larq", "list", "MeliusNet2*"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = ["MeliusNet22", "MeliusNet29", "MeliusNet23"]
    assert result.stdout.split() == melius_larq.list_models("MeliusNet2*") == expected
