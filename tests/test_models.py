"""Every registry model: build, forward, gradients, no-top, serialization, fit."""

import dataclasses
import inspect

import numpy as np
import pytest
from conftest import SMALL_CLASSES, SMALL_SHAPE, registry_params, small_model

import melius_larq
from melius_larq._compat import tf

MODELS = melius_larq.list_models()

# Saving and reloading runs the same ops on the same weights, so outputs agree to float32
# round-off of a re-ordered reduction at most (in practice they are bitwise equal).
SAME_GRAPH_ATOL = 1e-6
# The same bound relative to the outputs' scale, for logits of trained-like networks (their
# magnitude depends on the drawn BatchNorm statistics).
SAME_GRAPH_RTOL = 1e-6
# A 3x3 conv over 8 input channels per group sums 72 products of inputs in [-1, 1] and
# Glorot weights; two summation orders differ by a few float32 ulps of that sum (~1e-6).
REORDERED_SUM_ATOL = 1e-5


def _inputs(batch=2, shape=SMALL_SHAPE, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (batch, *shape)).astype(np.float32)


def _without_build_config(config):
    """Drops Keras' ``build_config`` entries, which an unbuilt clone does not record."""
    if isinstance(config, dict):
        return {k: _without_build_config(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_without_build_config(v) for v in config]
    return config


def _final_channels(name):
    spec = melius_larq.get_model_spec(name)
    return spec.transition_features[-1] + spec.growth_rate * spec.blocks[-1]


def test_registry_lists_every_builder():
    assert MODELS == [
        "MeliusNet22", "MeliusNet29", "MeliusNet42", "MeliusNet59", "MeliusNetA",
        "MeliusNetB", "MeliusNetC", "MeliusNet23", "BinaryDenseNet28", "BinaryDenseNet37",
        "BinaryDenseNet45", "MeliusNetTiny",
    ]  # fmt: skip
    for name in MODELS:
        assert getattr(melius_larq, name) is melius_larq.get_builder(name)
    assert melius_larq.list_models("binarydense*") == [n for n in MODELS if "Dense" in n]


def test_registry_lists_and_builds_the_other_families():
    from melius_larq.registry import model_family

    assert melius_larq.list_models(family="float") == ["ResNet18", "MobileNetV1"]
    assert melius_larq.list_models(family="baseline") == ["BinaryNetSmall"]
    everything = melius_larq.list_models(family=None)
    assert everything[: len(MODELS)] == MODELS
    assert {"ResNet18", "BinaryNetSmall"} <= set(everything)
    assert model_family("mobilenetv1") == "float" and model_family("MeliusNet22") == "binary"
    model = melius_larq.create_model("MobileNetV1", width=0.25, input_shape=(28, 28, 1),
                                     num_classes=10)  # fmt: skip
    assert model.output_shape == (None, 10) and model.get_layer("stem_conv").filters == 8
    with pytest.raises(ValueError, match="float network"):
        melius_larq.get_model_spec("ResNet18")
    with pytest.raises(ValueError, match="'quantum'"):
        melius_larq.list_models(family="quantum")


def test_builders_share_one_keyword_only_signature():
    reference = inspect.signature(melius_larq.MeliusNet22)
    for name in MODELS:
        sig = inspect.signature(getattr(melius_larq, name))
        assert sig == reference, name
        assert all(p.kind is p.KEYWORD_ONLY for p in sig.parameters.values()), name
    assert list(reference.parameters)[:5] == [
        "input_shape", "input_tensor", "weights", "include_top", "num_classes",
    ]  # fmt: skip
    with pytest.raises(TypeError):
        melius_larq.MeliusNet22((32, 32, 3))


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_forward(name):
    model = small_model(name)
    y = model(_inputs(), training=False).numpy()
    assert y.shape == (2, SMALL_CLASSES)
    assert np.isfinite(y).all()
    binary = [layer for layer in model.layers if "binconv" in layer.name]
    spec = melius_larq.get_model_spec(name)
    per_block = 2 if spec.family == "meliusnet" else 1
    assert len(binary) == per_block * sum(spec.blocks)


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_no_top_returns_the_final_feature_map(name):
    model = melius_larq.create_model(name, include_top=False)
    assert model.output_shape == (None, None, None, _final_channels(name))
    features = model(_inputs(batch=1, shape=(64, 64, 3)), training=False)
    assert features.shape == (1, 2, 2, _final_channels(name))


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_keras_file_and_config_round_trip_in_safe_mode(name, tmp_path):
    """A ``.keras`` file loads (``from_config`` of every layer, in safe mode) into the same
    config, weights and outputs."""
    model = small_model(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    assert _without_build_config(loaded.get_config()) == _without_build_config(model.get_config())
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # BatchNorm statistics included
    x = _inputs()
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(
        loaded(x, training=False), expected, atol=SAME_GRAPH_RTOL * np.abs(expected).max(), rtol=0
    )
    assert not any(isinstance(layer, tf.keras.layers.Lambda) for layer in loaded.layers)


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_fit_on_random_batches_moves_every_weight(name):
    """Keras' fit loop (losses, optimizer, BN updates) runs every model, and every trainable
    variable gets a gradient: Adam leaves a variable whose gradient is zero or missing exactly
    where it was, so a weight that did not move names a broken gradient path. It runs eagerly:
    tracing a graph-mode train step costs 30-90 s per model; tests/test_zoo.py trains in graph
    mode."""
    model = melius_larq.create_model(name, input_shape=SMALL_SHAPE, num_classes=SMALL_CLASSES)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    x = _inputs(batch=8)
    y = np.arange(8) % SMALL_CLASSES
    before = {w.name: w.numpy().copy() for w in model.weights}  # BN statistics included
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # one step moves them all
    assert np.isfinite(history.history["loss"][0])
    unmoved = [w.name for w in model.weights if np.array_equal(before[w.name], w.numpy())]
    assert not unmoved, f"no gradient or update reached {unmoved}"


def test_input_tensor_and_default_shapes():
    # every builder shares these defaults (one signature); the smallest network shows them
    tensor = tf.keras.Input((48, 48, 3))
    model = melius_larq.MeliusNetTiny(input_tensor=tensor, num_classes=3)
    assert model.input is tensor and model.output_shape == (None, 3)
    assert melius_larq.MeliusNetTiny().input_shape == (None, 224, 224, 3)
    assert melius_larq.MeliusNetTiny(stem="thumbnail").input_shape == (None, 32, 32, 3)
    assert melius_larq.MeliusNetTiny(include_top=False).input_shape == (None, None, None, 3)


def test_classifier_activation():
    # the head is the same for every MeliusNet-family builder; the smallest network shows it
    probs = melius_larq.MeliusNetTiny(input_shape=SMALL_SHAPE, num_classes=4)
    logits = melius_larq.MeliusNetTiny(
        input_shape=SMALL_SHAPE, num_classes=4, classifier_activation=None
    )
    assert probs.layers[-1].name == "head_softmax"
    assert logits.layers[-1].name == "head_dense"
    out = probs(_inputs(), training=False).numpy()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


# Each stem and each preset once in make test (all 8 pairs in CI's). The stems are shared by
# the family: MeliusNetTiny with the paper variants' valid pooling has their minimum sizes.
STEM_PRESET_PAIRS = [
    (stem, preset)
    if (stem, preset) in {("grouped", "lce"), ("imagenet", "larq_zoo"), ("thumbnail", "lce"),
                          ("small", "larq_zoo")}
    else pytest.param(stem, preset, marks=pytest.mark.large)
    for stem in ("grouped", "imagenet", "thumbnail", "small")
    for preset in ("lce", "larq_zoo")
]  # fmt: skip


@pytest.mark.parametrize(("stem", "preset"), STEM_PRESET_PAIRS)
def test_stems_and_presets_build_at_their_minimum_size(stem, preset):
    from melius_larq.models import VARIANTS, build_model

    size = melius_larq.min_input_size(stem=stem, preset=preset)
    spec = dataclasses.replace(VARIANTS["MeliusNetTiny"], pool_padding=None)  # the preset's
    model = build_model(spec, input_shape=(size, size, 3), stem=stem, preset=preset,
                        num_classes=2)  # fmt: skip
    assert model(_inputs(batch=1, shape=(size, size, 3)), training=False).shape == (1, 2)
    if size > 1:  # "same" padding (larq_zoo preset) never shrinks a map to zero
        with pytest.raises(ValueError, match=rf"at least {size}x{size}"):
            build_model(spec, input_shape=(size - 1, size - 1, 3), stem=stem, preset=preset)


def test_meliusnet_tiny_pools_odd_maps_with_same_padding():
    """At 28x28 the small stem gives 14x14 maps: MeliusNetTiny's transitions keep the last
    row and column (7 -> 4 -> 2); the paper's variants keep the authors' valid pooling."""

    def pooled(model):
        return [model.get_layer(f"section_{i}_transition_maxpool").output.shape[1]
                for i in range(3)]  # fmt: skip

    tiny = melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), stem="small", include_top=False)
    assert pooled(tiny) == [7, 4, 2]
    m22 = melius_larq.MeliusNet22(input_shape=(28, 28, 1), stem="small", include_top=False)
    assert pooled(m22) == [7, 3, 1]
    assert melius_larq.min_input_size(stem="small") == 16
    assert melius_larq.min_input_size(stem="small", pool_padding="same") == 2
    assert melius_larq.MeliusNetTiny(input_shape=(2, 2, 1), stem="small").output_shape == (
        None, 1000)  # fmt: skip


def test_symmetric_stem_padding_matches_mxnet():
    """The stem's stride-2 layers pad like MXNet (1 px each side) for odd and even sizes."""
    for size in (32, 33):  # the grouped stem is the same in every MeliusNet-family network
        model = melius_larq.MeliusNetTiny(input_shape=(size, size, 3), include_top=False)
        conv = model.get_layer("stem_s0_conv")
        x = _inputs(batch=1, shape=(size, size, 3))
        kernel = conv.kernel.numpy()
        reference = tf.nn.conv2d(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]), kernel, 2, "VALID")
        sub = tf.keras.Model(model.input, conv.output)
        np.testing.assert_allclose(sub(x), reference, atol=SAME_GRAPH_ATOL)


def test_presets_binary_semantics():
    import larq as lq

    # presets act on the family's shared blocks and stem; the smallest network shows them
    lce_model = melius_larq.MeliusNetTiny(input_shape=SMALL_SHAPE, num_classes=2)
    zoo_model = melius_larq.MeliusNetTiny(input_shape=SMALL_SHAPE, num_classes=2,
                                          preset="larq_zoo")  # fmt: skip
    with pytest.warns(UserWarning, match="only accelerates pad values"):
        ref_model = melius_larq.MeliusNetTiny(
            input_shape=SMALL_SHAPE, num_classes=2, preset="reference"
        )
    conv = lce_model.get_layer("section_0_block_0_dense_binconv")
    assert conv.pad_values == 1.0 and conv.kernel_constraint is None
    assert conv.input_quantizer.clip_value == 1.3 and conv.kernel_quantizer.clip_value is None
    zconv = zoo_model.get_layer("section_0_block_0_dense_binconv")
    assert zconv.pad_values == 0.0 and isinstance(
        zconv.kernel_constraint, lq.constraints.WeightClip
    )
    assert ref_model.get_layer("section_0_block_0_dense_binconv").pad_values == -1.0
    assert zoo_model.get_layer("stem_pool").pool_size == (2, 2)
    assert lce_model.get_layer("stem_pool").pool_size == (3, 3)


def test_improvement_block_adds_to_the_last_growth_rate_channels():
    # k = 64 in the paper's variants; the family's shared block shown on MeliusNetTiny (k = 32)
    model = melius_larq.MeliusNetTiny(input_shape=SMALL_SHAPE, include_top=False)
    k = melius_larq.get_model_spec("MeliusNetTiny").growth_rate
    names = ["stem_pool", "section_0_block_0_dense_concat", "section_0_block_0_improve_binconv",
             "section_0_block_0_improve_concat"]  # fmt: skip
    sub = tf.keras.Model(model.input, [model.get_layer(n).output for n in names])
    x_in, dense, update, out = (t.numpy() for t in sub(_inputs(), training=False))
    assert update.shape[-1] == k and out.shape[-1] == x_in.shape[-1] + k
    np.testing.assert_array_equal(out[..., : x_in.shape[-1]], x_in)
    np.testing.assert_array_equal(out[..., :-k], dense[..., :-k])
    np.testing.assert_allclose(out[..., -k:], dense[..., -k:] + update, atol=SAME_GRAPH_ATOL)


def test_channel_shuffle_matches_definition():
    x = np.arange(2 * 1 * 1 * 32, dtype=np.float32).reshape(2, 1, 1, 32)
    y = melius_larq.ChannelShuffle(4)(x).numpy()
    expected = x.reshape(2, 1, 1, 4, 8).transpose(0, 1, 2, 4, 3).reshape(2, 1, 1, 32)
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="divisible by 4"):
        melius_larq.ChannelShuffle(4)(np.zeros((1, 1, 1, 6), np.float32))


def test_group_conv_equals_native_grouped_conv():
    x = _inputs(batch=2, shape=(9, 9, 32))
    native = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", groups=4, use_bias=True)
    split = melius_larq.GroupConv2D.from_config(native.get_config())
    native(x), split(x)
    split.set_weights(native.get_weights())
    # the same products summed per group; only the summation order may differ
    np.testing.assert_allclose(split(x), native(x), atol=REORDERED_SUM_ATOL)
    assert tf.keras.layers.deserialize(tf.keras.layers.serialize(split)).groups == 4
