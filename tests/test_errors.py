"""Bad input gets a ValueError that names the bad value and what was expected."""

import os
import subprocess
import sys

import pytest

import melius_larq


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"Unknown model 'MeliusNet99'.*MeliusNet22.*BinaryDenseNet45"
    ):
        melius_larq.create_model("MeliusNet99")


def test_model_names_are_case_insensitive():
    model = melius_larq.create_model("meliusnet22", input_shape=(32, 32, 3), num_classes=2)
    assert model.name == "meliusnet22"


def test_unknown_stem_and_preset():
    with pytest.raises(ValueError, match=r"Unknown stem 'resnet'.*grouped, imagenet, thumbnail"):
        melius_larq.MeliusNet22(stem="resnet")
    with pytest.raises(ValueError, match=r"Unknown preset 'fast'.*lce, reference, larq_zoo"):
        melius_larq.MeliusNet22(preset="fast")


def test_input_too_small():
    with pytest.raises(ValueError, match=r"Input 16x16 is too small.*at least 29x29"):
        melius_larq.MeliusNet22(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"at least 8x8"):
        melius_larq.MeliusNet22(input_shape=(4, 4, 1), stem="thumbnail")


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, None), (0, 32, 3), "abc"])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_shape"):
        melius_larq.MeliusNet22(input_shape=shape)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        melius_larq.MeliusNet22(num_classes=num_classes)


def test_keras3_already_imported_gives_an_actionable_import_error():
    code = (
        "import os; os.environ['TF_USE_LEGACY_KERAS'] = '0'\n"
        "import tensorflow as tf; tf.keras.layers\n"
        "import melius_larq\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_import_selects_keras2_without_any_environment():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = "import melius_larq, tensorflow as tf, larq; print(tf.keras.layers.Layer.__module__)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("tf_keras"), result.stdout
