"""fold_presign_batchnorm: BatchNorms that only feed signs become shifts, exactly."""

import doctest

import numpy as np
import pytest

import melius_larq
import melius_larq.fold
from melius_larq._compat import tf
from melius_larq.deploy import convert_model, op_inventory
from melius_larq.deploy.suite import randomize_batchnorm
from melius_larq.deploy.verify import keras_outputs, run_lce
from melius_larq.layers import ChannelShift

# The fold changes a * x + b into x + b / a: the same sign except within float rounding of 0,
# and the binary convolutions then see identical inputs. Logits of the float Keras models agree
# to float32 rounding of the un-folded BatchNorms' neighbours (observed 0 to 1e-6).
KERAS_ATOL = 1e-5
# LCE against Keras: as in test_lce_conversion, 1e-4 of the logits' scale.
LCE_RTOL = 1e-4


def _trained_like(name, shape, **kwargs):
    """A registry model whose BatchNorms hold statistics like a trained network's."""
    model = melius_larq.create_model(name, input_shape=shape, num_classes=10,
                                     classifier_activation=None, **kwargs)  # fmt: skip
    return randomize_batchnorm(model)


@pytest.mark.parametrize(
    "name, shape, kwargs",
    [
        ("MeliusNetTiny", (28, 28, 1), {"stem": "small"}),
        # the BinaryDenseNet family (one fold per block) runs with the large tests
        pytest.param("BinaryDenseNet28", (32, 32, 3), {}, marks=pytest.mark.large),
    ],
)
def test_fold_keeps_the_function_in_keras_and_lce(name, shape, kwargs):
    model = _trained_like(name, shape, **kwargs)
    before = [w.copy() for w in model.get_weights()]
    folded, names = melius_larq.fold_presign_batchnorm(model)
    spec = melius_larq.get_model_spec(name)
    assert len(names) == (2 if spec.family == "meliusnet" else 1) * sum(spec.blocks)
    assert all(isinstance(folded.get_layer(n), ChannelShift) for n in names)
    # the input model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert all(isinstance(model.get_layer(n), tf.keras.layers.BatchNormalization) for n in names)
    x = np.random.RandomState(1).normal(size=(4, *shape)).astype(np.float32)
    expected = keras_outputs(model, x)
    np.testing.assert_allclose(keras_outputs(folded, x), expected, atol=KERAS_ATOL, rtol=0)
    unfolded = convert_model(model, fold_batchnorm=False)
    buf = convert_model(model)
    assert op_inventory(buf).get("MUL", 0) <= op_inventory(unfolded)["MUL"] - len(names)
    got = run_lce(buf, x)
    assert np.max(np.abs(got - expected)) <= LCE_RTOL * np.max(np.abs(expected))
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_a_batchnorm_with_a_negative_scale_stays(tmp_path):
    model = _trained_like("MeliusNetTiny", (28, 28, 1), stem="small")
    bn = model.get_layer("section_0_block_0_dense_bn")
    gamma, *rest = bn.get_weights()
    gamma[3] = -0.7
    bn.set_weights([gamma, *rest])
    folded, names = melius_larq.fold_presign_batchnorm(model)
    assert "section_0_block_0_dense_bn" not in names and len(names) == 13
    x = np.random.RandomState(2).normal(size=(4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(keras_outputs(folded, x), keras_outputs(model, x),
                               atol=KERAS_ATOL, rtol=0)  # fmt: skip
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = tf.keras.models.load_model(path, safe_mode=True, compile=False)
    assert isinstance(loaded.get_layer(names[0]), ChannelShift)
    np.testing.assert_array_equal(keras_outputs(loaded, x), keras_outputs(folded, x))


def test_nothing_to_fold_returns_the_model_itself():
    plain = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.BatchNormalization()])
    assert melius_larq.fold_presign_batchnorm(plain) == (plain, [])
    with pytest.raises(ValueError, match="ChannelShift\\(3\\) got an input with 4 channels"):
        ChannelShift(3)(tf.zeros((1, 4)))


def test_docstring_example_runs():
    result = doctest.testmod(melius_larq.fold, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0
