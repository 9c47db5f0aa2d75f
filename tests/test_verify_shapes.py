"""``verify`` of a flatbuffer against a model of another input size: one clear error.

The flatbuffer's input shape is checked against the Keras model and the inputs before
anything runs, so the user reads both shapes in one ``error:`` line, not the interpreter's
message followed by a progress bar.
"""

import numpy as np
import pytest

import melius_larq
from melius_larq.cli import main
from melius_larq.deploy.flatbuffer import input_shape
from melius_larq.deploy.verify import verify_flatbuffer

pytest.importorskip("larq_compute_engine")


@pytest.fixture(scope="module")
def good_tflite(tmp_path_factory):
    """A MeliusNetTiny flatbuffer at 32x32, converted from the registry by the CLI."""
    path = tmp_path_factory.mktemp("verify_shapes") / "good.tflite"
    argv = [
        "convert",
        "MeliusNetTiny",
        "-o",
        str(path),
        "--input-size",
        "32",
        "--num-classes",
        "10",
    ]
    assert main(argv) == 0
    return path


def test_input_shape_of_a_flatbuffer(good_tflite):
    assert input_shape(good_tflite) == (32, 32, 3)


def test_cli_names_both_input_sizes_in_one_error_line(good_tflite, capsys):
    capsys.readouterr()
    code = main(["verify", str(good_tflite), "--keras", "MeliusNetTiny", "--input-size", "64",
                 "--num-classes", "10", "--samples", "3"])  # fmt: skip
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2
    assert lines == [
        "error: The flatbuffer takes 32x32x3 inputs, but the Keras model takes 64x64x3: they "
        "are not the same network (convert and verify at the same input size)."
    ]
    assert captured.out == ""


def test_python_api_names_both_shapes(good_tflite):
    model = melius_larq.create_model("MeliusNetTiny", input_shape=(64, 64, 3), num_classes=10)
    x = np.zeros((2, 64, 64, 3), np.float32)
    with pytest.raises(
        ValueError, match=r"takes 32x32x3 inputs, but the Keras model takes 64x64x3"
    ):
        verify_flatbuffer(good_tflite, model, x)
    # with precomputed Keras outputs, the inputs themselves are checked
    reference = np.zeros((2, 10), np.float32)
    with pytest.raises(
        ValueError, match=r"shape 64x64x3 per sample, but the flatbuffer takes 32x32x3"
    ):
        verify_flatbuffer(good_tflite, None, x, reference=reference)
