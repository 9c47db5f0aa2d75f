"""BNN+ ingredients as separate options, the per-weight regularizer, the diagnostics and the
BNN baseline network (BinaryNetSmall)."""

import json
import math
import zipfile

import larq as lq
import numpy as np
import pytest
from conftest import require

import melius_larq
from melius_larq import bnnplus
from melius_larq._compat import tf
from melius_larq.bnnplus.config import BNNPLUS_BETA

# Central differences with step FD_STEP (float64) of a function that is linear near x (the
# clipped identity away from its kinks) are exact up to rounding, ~1e-16 / FD_STEP; of SS_β
# they are within FD_STEP² · |SS'''| / 6 <= 2e-6 at β = 10. The pseudo-gradients are float32
# (relative error ~1e-7 of values up to β). GRAD_ATOL_PER_PEAK, times the peak gradient (1 for
# the STE, β for SignSwish), leaves a factor > 5 over both; a wrong estimator, clip or β is
# off by order 1.
FD_STEP = 1e-4
GRAD_ATOL_PER_PEAK = 1e-5
# Grid points closer than this to a kink of the clipped identity (|x| = clip) are skipped: the
# central difference straddles the kink there.
KINK_MARGIN = 2 * FD_STEP
# Same ops on the same weights (a reloaded model, two layers with identical weights): float32
# round-off of a re-ordered reduction at most.
SAME_GRAPH_ATOL = 1e-5
# Float32 means of up to 2e4 terms of similar size: relative round-off well below 1e-5.
MEAN_RTOL = 1e-5


def _ss(x, beta):
    """SS_β(x) = 2σ(βx)[1 + βx(1 − σ(βx))] − 1, in float64."""
    s = 1.0 / (1.0 + np.exp(-beta * x))
    return 2.0 * s * (1.0 + beta * x * (1.0 - s)) - 1.0


def _inputs(shape, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


def _quantizer_gradient(quantizer, x64):
    x = tf.constant(x64, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
    return tape.gradient(y, x).numpy()


# Estimators -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, role, surrogate, peak",
    [
        ({"activation_estimator": "ste", "activation_clip": 0.8}, "input",
         lambda x: np.clip(x, -0.8, 0.8), 1.0),
        ({"activation_estimator": "ste"}, "input", lambda x: np.clip(x, -1.3, 1.3), 1.0),
        ({"beta": 2.0}, "input", lambda x: _ss(x, 2.0), 2.0),
        ({"weight_estimator": "ste"}, "kernel", lambda x: np.clip(x, -1.0, 1.0), 1.0),
        ({"weight_estimator": "sign_swish", "beta": 10.0}, "kernel", lambda x: _ss(x, 10.0),
         10.0),
    ],
    ids=["activation-ste-0.8", "activation-ste-network-clip", "activation-sign-swish-2",
         "weight-ste", "weight-sign-swish-10"],
)  # fmt: skip
def test_each_estimator_is_the_derivative_of_its_surrogate(options, role, surrogate, peak):
    """The layer a configuration builds uses the estimator it names: its pseudo-gradient is the
    finite-difference derivative of the smooth or clipped surrogate, away from kinks."""
    layer = bnnplus.BNNPlusConfig(**options).conv2d(4, 3, activation_clip=1.3, kernel_clip=1.0)
    quantizer = getattr(layer, f"{role}_quantizer")
    if isinstance(quantizer, bnnplus.SignSwish):
        quantizer.build(())
    x64 = np.linspace(-3.0, 3.0, 601) + 1e-3  # no grid point at 0 or exactly at a clip
    clip = getattr(quantizer, "clip_value", None)
    if clip is not None:
        x64 = x64[np.abs(np.abs(x64) - clip) > KINK_MARGIN]
    expected = (surrogate(x64 + FD_STEP) - surrogate(x64 - FD_STEP)) / (2 * FD_STEP)
    got = _quantizer_gradient(quantizer, x64)
    np.testing.assert_allclose(got, expected, atol=GRAD_ATOL_PER_PEAK * peak, rtol=0)
    np.testing.assert_array_equal(
        quantizer(tf.constant(x64, tf.float32)), np.where(x64 >= 0, 1, -1)
    )


def test_scheduled_beta_ramps_every_batch_through_the_configs_callback():
    config = bnnplus.BNNPlusConfig(beta=2.0, beta_end=6.0, beta_ramp_epochs=1.0)
    inputs = tf.keras.Input((4, 4, 3))
    conv = config.conv2d(2, 3, padding="same", name="binconv")
    model = tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    model.compile(tf.keras.optimizers.SGD(0.0), loss="mse")
    seen = []
    record = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(float(conv.input_quantizer.beta_variable))
    )
    (schedule,) = config.callbacks(epochs=3)
    x, y = _inputs((8, 4, 4, 3)), np.zeros((8, 2), np.float32)
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[schedule, record])
    # 4 batches per epoch: β = 2 + 4 · t for t = 0, 1/4, ..., then 6 from epoch 1 on
    assert seen == [2.0, 3.0, 4.0, 5.0, 6.0, 6.0, 6.0, 6.0]
    assert bnnplus.BNNPlusConfig().callbacks(epochs=3) == []
    # without beta_ramp_epochs the ramp spans the whole run
    (whole,) = bnnplus.BNNPlusConfig(beta=2.0, beta_end=6.0).callbacks(epochs=4)
    assert whole.schedule(2.0) == 4.0


# Regularizer per weight ---------------------------------------------------------------------
def _layer_at_distance(filters, channels, *, ratio, reduction, reg_lambda=0.5):
    """A BNN+ conv whose α is 0.1 and whose latent weights all have |w| = ratio · α."""
    layer = bnnplus.BNNPlusConv2D(filters, 3, alpha_sharing="layer", reg_lambda=reg_lambda,
                                  reduction=reduction)  # fmt: skip
    layer.build((None, 6, 6, channels))
    layer.alpha.assign(0.1)
    signs = np.where(_inputs(layer.kernel.shape, seed=filters) >= 0, 1.0, -1.0)
    layer.kernel.latent_variable.assign((signs * ratio * 0.1).astype(np.float32))
    return layer


@pytest.mark.parametrize("ratio", [0.5, 1.5])
def test_mean_regularizer_is_a_per_weight_penalty_independent_of_the_layer_size(ratio):
    small = _layer_at_distance(4, 2, ratio=ratio, reduction="mean")  # 72 weights
    large = _layer_at_distance(64, 32, ratio=ratio, reduction="mean")  # 18,432 weights
    distance = abs(1.0 - ratio) * 0.1  # |α − |w|| of every weight
    for layer in (small, large):
        assert float(layer.losses[0]) == pytest.approx(0.5 * distance, rel=MEAN_RTOL)
        # every weight gets the same pull, λ · ∂R/∂w, shared out over the layer's n weights
        latent = layer.kernel.latent_variable
        with tf.GradientTape() as tape:
            loss = layer.regularization_loss()
        grad = tape.gradient(loss, latent).numpy() * latent.shape.num_elements()
        dr_dw = -np.sign(1.0 - ratio) * np.sign(latent.numpy())  # -sign(α − |w|) · sign(w)
        np.testing.assert_allclose(grad, 0.5 * dr_dw, rtol=MEAN_RTOL)
    # the paper's sum grows with the layer: the same λ is 256 times stronger on the large one
    summed = [_layer_at_distance(f, c, ratio=ratio, reduction="sum") for f, c in ((4, 2), (64, 32))]
    assert float(summed[1].losses[0]) / float(summed[0].losses[0]) == pytest.approx(256, rel=1e-4)


@pytest.mark.large  # four BNN+ builds, two of MeliusNet22; the reductions' unit test is above
def test_a_mean_lambda_means_about_the_same_on_meliusnet_tiny_and_meliusnet22():
    """λ·R at initialisation, as a share of ln 10 (the initial cross-entropy of 10 classes),
    with λ = 0.3 per weight (the experiment's full-BNN+ λ): a few percent on both models
    (within 2x of each other), where a summed regularizer with one λ (1e-6) differs by a
    factor of about 8 between them."""
    shares = {}
    for reduction, lam in (("mean", 0.3), ("sum", 1e-6)):
        config = bnnplus.BNNPlusConfig(reduction=reduction, reg_lambda=lam)
        for name, stem in (("MeliusNetTiny", "small"), ("MeliusNet22", "thumbnail")):
            tf.keras.utils.set_random_seed(0)
            model = melius_larq.create_model(name, input_shape=(28, 28, 1), num_classes=10,
                                             stem=stem, binarization="bnn+", bnn_plus=config)  # fmt: skip
            shares[reduction, name] = float(tf.add_n(model.losses)) / math.log(10)
    tiny, m22 = shares["mean", "MeliusNetTiny"], shares["mean", "MeliusNet22"]
    assert 0.02 < tiny < 0.1 and 0.02 < m22 < 0.1, shares
    assert max(tiny, m22) / min(tiny, m22) < 2, shares
    assert shares["sum", "MeliusNet22"] / shares["sum", "MeliusNetTiny"] > 5, shares


def test_regularizer_none_adds_no_loss_and_an_unused_alpha_is_not_trained():
    off = bnnplus.BNNPlusConfig(regularizer="none", alpha_in_forward=False)
    layer = off.conv2d(4, 3)
    layer.build((None, 5, 5, 3))
    assert (
        layer.losses == [] and layer.reg_lambda == 0.0 and float(layer.regularization_loss()) == 0
    )
    assert not layer.alpha.trainable
    assert not any(v is layer.alpha for v in layer.trainable_weights)
    alpha_only = bnnplus.BNNPlusConfig(regularizer="none").conv2d(4, 3)
    alpha_only.build((None, 5, 5, 3))
    assert alpha_only.alpha.trainable and alpha_only.losses == []


# Diagnostics ----------------------------------------------------------------------------------
def _hand_made_model():
    """A dense BNN+ layer (α per unit) and a 1x1 conv BNN+ layer (one α), with chosen weights.

    Dense, 5 x 4, α = 0.1, 0.2, 0.3, 0.4: every column holds |w|/α = 1.0, 0.8, 1.3, 1.2, 0.5,
    so 3 of 5 are within [0.75, 1.25] (1.3 and 0.5 are not): 12 of 20.
    Conv 1x1, 2 -> 3, α = 0.5: |w|/α = 1.0, 1.2, 0.2, 1.4, 0.8, 0.6: 3 of 6.
    """
    inputs = tf.keras.Input((5,))
    dense = bnnplus.BNNPlusDense(4, name="dense")
    x = dense(inputs)
    x = tf.keras.layers.Reshape((1, 1, 4))(x)
    x = tf.keras.layers.Conv2D(2, 1, name="float")(x)
    conv = bnnplus.BNNPlusConv2D(3, 1, alpha_sharing="layer", name="conv")
    model = tf.keras.Model(inputs, tf.keras.layers.Flatten()(conv(x)))
    alpha = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    ratios = np.array([1.0, -0.8, 1.3, -1.2, 0.5], np.float32)[:, None]
    dense.alpha.assign(alpha)
    dense.kernel.latent_variable.assign(ratios * alpha)
    conv.alpha.assign(0.5)
    conv.kernel.latent_variable.assign(
        np.array([1.0, -1.2, 0.2, 1.4, -0.8, 0.6], np.float32).reshape(1, 1, 2, 3) * 0.5
    )
    return model


def test_diagnostics_count_weights_near_alpha_on_a_hand_made_model(tmp_path):
    model = _hand_made_model()
    diagnostics = bnnplus.BNNPlusDiagnostics(model=model)
    expected = {"near_alpha_fraction": 15 / 26, "alpha_mean": 0.3}
    assert diagnostics.measure() == pytest.approx(expected, rel=1e-6)
    # through fit: logged every epoch, into history and (placed before it) the CSV log
    model.compile(tf.keras.optimizers.SGD(0.0), loss="mse")
    csv_path = tmp_path / "history.csv"
    history = model.fit(_inputs((4, 5)), np.zeros((4, 3), np.float32), epochs=2, verbose=0,
                        callbacks=[diagnostics, tf.keras.callbacks.CSVLogger(str(csv_path))])  # fmt: skip
    assert history.history["near_alpha_fraction"] == pytest.approx([15 / 26] * 2, rel=1e-6)
    assert history.history["alpha_mean"] == pytest.approx([0.3] * 2, rel=1e-6)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"near_alpha_fraction", "alpha_mean"} <= set(header)
    narrow = bnnplus.BNNPlusDiagnostics(0.15, model=model).measure()  # 1.2, 0.8 drop out
    assert narrow["near_alpha_fraction"] == pytest.approx(5 / 26, rel=1e-6)


def test_diagnostics_refuse_a_model_without_bnn_plus_layers_and_bad_tolerances():
    plain = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no BNN\\+ layer"):
        plain.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0,
                  callbacks=[bnnplus.BNNPlusDiagnostics()])  # fmt: skip
    for tolerance in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=f"tolerance.*{tolerance}"):
            bnnplus.BNNPlusDiagnostics(tolerance)


# Every option builds, saves and loads ----------------------------------------------------------
OPTIONS = {
    "activation-ste": {"activation_estimator": "ste", "activation_clip": 0.9},
    "sign-swish-trainable": {"beta": 3.0, "train_beta": True},
    "sign-swish-scheduled": {"beta": 2.0, "beta_end": 8.0},
    "weight-sign-swish": {"weight_estimator": "sign_swish"},
    "weight-clip-network": {"weight_clip": None},
    "no-alpha-forward": {"alpha_in_forward": False},
    "no-regularizer": {"regularizer": "none"},
    "euclidean-sum": {"regularizer": "euclidean", "reduction": "sum"},
    "alpha-per-layer": {"alpha_sharing": "layer", "reg_lambda": 2.0},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS)
def test_each_option_builds_a_model_that_survives_a_keras_round_trip(options, tmp_path):
    config = bnnplus.BNNPlusConfig(**options)
    model = melius_larq.BinaryNetSmall(binarization="bnn+", bnn_plus=config,
                                       classifier_activation=None)  # fmt: skip
    layers = bnnplus.bnn_plus_layers(model)
    assert len(layers) == 6 and isinstance(layers[-1], bnnplus.BNNPlusDense)
    for layer in layers:
        assert (layer.regularizer, layer.reduction) == (config.regularizer, config.reduction)
        assert layer.reg_lambda == config.reg_lambda
        assert layer.alpha_in_forward == config.alpha_in_forward
        swish = isinstance(layer.input_quantizer, bnnplus.SignSwish)
        assert swish == (config.activation_estimator == "sign_swish")
        if not swish:
            assert layer.input_quantizer.clip_value == (config.activation_clip or 1.0)
        assert layer.kernel_constraint.clip_value == (config.weight_clip or 1.0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    x = _inputs((2, 28, 28, 1))
    np.testing.assert_allclose(loaded(x), model(x), atol=SAME_GRAPH_ATOL, rtol=0)
    for a, b in zip(layers, bnnplus.bnn_plus_layers(loaded), strict=True):
        assert json.dumps(a.get_config(), sort_keys=True) == json.dumps(
            b.get_config(), sort_keys=True
        )
    np.testing.assert_allclose(loaded.losses, model.losses, rtol=1e-6)


def _strip_key(path, key):
    """Rewrites a .keras file without ``key`` in any layer config: a file from before it existed."""
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != key}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    config = json.loads(files["config.json"])
    assert key in files["config.json"].decode()
    files["config.json"] = json.dumps(strip(config)).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_files_saved_before_the_reduction_option_load_as_summed(tmp_path):
    config = bnnplus.BNNPlusConfig(reduction="sum")  # what older files were trained with
    model = melius_larq.BinaryNetSmall(binarization="bnn+", bnn_plus=config)
    path = tmp_path / "old.keras"
    model.save(path)
    _strip_key(path, "reduction")
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    assert {layer.reduction for layer in bnnplus.bnn_plus_layers(loaded)} == {"sum"}
    np.testing.assert_allclose(loaded.losses, model.losses, rtol=1e-6)
    x = _inputs((2, 28, 28, 1))
    np.testing.assert_allclose(loaded(x), model(x), atol=SAME_GRAPH_ATOL, rtol=0)


def _clips(layer):
    constraint = layer.kernel_constraint
    return layer.kernel_quantizer.clip_value, constraint and constraint.clip_value


@pytest.mark.filterwarnings("ignore:preset='reference' pads")  # it warns about deployment
@pytest.mark.parametrize("preset", sorted(melius_larq.PRESETS))
def test_builders_give_bnn_plus_layers_the_networks_clips_unlike_the_standalone_defaults(preset):
    """The documented difference: a standalone layer has BNN's clips (1.0) and larq's β; a
    builder's BNN+ layer has the clips of the STE layer it replaces and ``BNNPLUS_BETA``."""
    standalone = bnnplus.BNNPlusConv2D(4, 3)
    assert _clips(standalone) == (1.0, 1.0)
    assert standalone.input_quantizer.beta == bnnplus.DEFAULT_BETA
    kwargs = dict(input_shape=(28, 28, 1), num_classes=10, stem="small", preset=preset)
    ste = {layer.name: layer for layer in melius_larq.MeliusNetTiny(**kwargs).layers}
    layers = bnnplus.bnn_plus_layers(melius_larq.MeliusNetTiny(**kwargs, binarization="bnn+"))
    assert layers
    for layer in layers:
        assert _clips(layer) == _clips(ste[layer.name]), layer.name
        assert layer.input_quantizer.beta == BNNPLUS_BETA
    expected = {"lce": (None, None), "reference": (None, None), "larq_zoo": (1.3, 1.3)}
    assert _clips(layers[0]) == expected[preset]


# The BNN baseline --------------------------------------------------------------------------------
def test_binarynet_small_is_bnn_with_float_first_and_last_layers():
    model = melius_larq.create_model("BinaryNetSmall", input_shape=(28, 28, 1), num_classes=10)
    assert melius_larq.get_builder("binarynetsmall") is melius_larq.BinaryNetSmall
    weighted = [layer for layer in model.layers if layer.weights and
                not isinstance(layer, tf.keras.layers.BatchNormalization)]  # fmt: skip
    first, *middle, last = weighted
    assert type(first) is tf.keras.layers.Conv2D and type(last) is tf.keras.layers.Dense
    assert [type(layer) for layer in middle] == [lq.layers.QuantConv2D] * 5 + [lq.layers.QuantDense]
    for layer in middle:
        for quantizer in (layer.input_quantizer, layer.kernel_quantizer):
            assert type(quantizer) is lq.quantizers.SteSign and quantizer.clip_value == 1.0
        assert isinstance(layer.kernel_constraint, lq.constraints.WeightClip)
        assert layer.kernel_constraint.clip_value == 1.0
        assert not layer.use_bias and not hasattr(layer, "alpha")
    assert [layer.pad_values for layer in middle[:-1]] == [1.0] * 5
    assert model.output_shape == (None, 10) and model.layers[-1].name == "softmax"
    assert "BinaryNetSmall" in melius_larq.list_models(baselines=True)
    assert "BinaryNetSmall" not in melius_larq.list_models()
    with pytest.raises(ValueError, match="baseline network"):
        melius_larq.get_model_spec("BinaryNetSmall")


def test_bnn_plus_with_every_ingredient_off_is_the_bnn_baseline():
    """The experiment's arms differ from BNN only in what they switch on: with every BNN+
    ingredient off, BinaryNetSmall computes the same outputs and gradients as BNN."""
    off = {"activation_estimator": "ste", "regularizer": "none", "alpha_in_forward": False,
           "weight_clip": None}  # fmt: skip
    tf.keras.utils.set_random_seed(0)
    bnn = melius_larq.BinaryNetSmall(classifier_activation=None)
    tf.keras.utils.set_random_seed(0)
    plus = melius_larq.BinaryNetSmall(classifier_activation=None, binarization="bnn+", bnn_plus=off)
    by_name = {w.name: w for w in plus.weights}
    for w in bnn.weights:  # same initial weights; the BNN+ model has an α (unused) per layer
        np.testing.assert_array_equal(by_name[w.name].numpy(), w.numpy())
    x, labels = _inputs((4, 28, 28, 1)), np.arange(4)

    def gradients(model):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))  # fmt: skip
        return logits, dict(zip([v.name for v in model.trainable_variables],
                                tape.gradient(loss, model.trainable_variables)))  # fmt: skip

    (y_bnn, g_bnn), (y_plus, g_plus) = gradients(bnn), gradients(plus)
    np.testing.assert_allclose(y_plus, y_bnn, atol=SAME_GRAPH_ATOL, rtol=0)
    assert sorted(g_plus) == sorted(g_bnn)  # α is not trained when it is used nowhere
    for name, grad in g_bnn.items():
        np.testing.assert_allclose(g_plus[name], grad, atol=SAME_GRAPH_ATOL)


def test_binarynet_small_trains_and_every_variable_gets_a_gradient():
    model = melius_larq.BinaryNetSmall(classifier_activation=None, binarization="bnn+")
    x, labels = _inputs((4, 28, 28, 1)), np.arange(4)
    with tf.GradientTape() as tape:
        ce = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            labels, model(x, training=True), from_logits=True))  # fmt: skip
        loss = ce + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads, strict=True):
        assert grad is not None and np.any(grad.numpy() != 0), variable.name


# Bad input --------------------------------------------------------------------------------------
BAD_CONFIGS = [
    ({"activation_estimator": "xnor"}, "`activation_estimator` to be 'sign_swish' or 'ste', but got 'xnor'"),
    ({"weight_estimator": "tanh"}, "`weight_estimator` to be 'sign_swish' or 'ste', but got 'tanh'"),
    ({"regularizer": "l3"}, "`regularizer` to be 'none', 'manhattan'.*but got 'l3'"),
    ({"reduction": "max"}, "`reduction` to be one of .*but got 'max'"),
    ({"reg_lambda": -1.0}, "`reg_lambda` to be a finite float >= 0 or None, but got -1.0"),
    ({"reg_lambda": float("nan")}, "`reg_lambda` .* but got nan"),
    ({"reg_lambda": float("inf")}, "`reg_lambda` .* but got inf"),
    ({"beta": 0.0}, "`beta` to be a finite float > 0, but got 0.0"),
    ({"beta": -2.0}, "`beta` to be a finite float > 0, but got -2.0"),
    ({"beta": float("nan")}, "`beta` to be a finite float > 0, but got nan"),
    ({"beta": 30.0}, "`beta` within beta_range=.*but got beta=30.0"),
    ({"beta_end": 0.0}, "`beta_end` to be a finite float > 0, but got 0.0"),
    ({"activation_clip": 0.0, "activation_estimator": "ste"}, "`activation_clip` .* but got 0.0"),
    ({"weight_clip": float("inf")}, "`weight_clip` .* but got inf"),
    ({"activation_clip": 1.0}, "activation_clip=1.0 conflicts with activation_estimator='sign_swish'"),
    ({"regularizer": "none", "reg_lambda": 0.1}, "reg_lambda=0.1 conflicts with regularizer='none'"),
    ({"activation_estimator": "ste", "train_beta": True}, "train_beta=True conflicts with activation_estimator='ste'"),
    ({"activation_estimator": "ste", "beta": 10.0}, "beta=10.0 conflicts with activation_estimator='ste'"),
    ({"beta_end": 8.0, "train_beta": True}, "beta_end=8.0 conflicts with train_beta=True"),
    ({"beta_ramp_epochs": 3.0}, "beta_ramp_epochs=3.0 needs beta_end"),
]  # fmt: skip


@pytest.mark.parametrize("options, message", BAD_CONFIGS, ids=[str(o) for o, _ in BAD_CONFIGS])
def test_bad_options_fail_with_one_line_naming_the_value(options, message):
    with pytest.raises(ValueError, match=message) as err:
        bnnplus.BNNPlusConfig(**options)
    assert "\n" not in str(err.value)


def test_options_that_conflict_with_the_network_name_it():
    with pytest.raises(ValueError, match="weight_clip=1.5 conflicts with preset='larq_zoo'") as err:
        melius_larq.MeliusNet22(preset="larq_zoo", binarization="bnn+",
                                bnn_plus={"weight_clip": 1.5})  # fmt: skip
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="weight_clip=2.0 conflicts with BinaryNetSmall"):
        melius_larq.BinaryNetSmall(binarization="bnn+", bnn_plus={"weight_clip": 2.0})
    # the lce preset's identity STE on the weights has no clip to exceed
    melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), stem="small", binarization="bnn+",
                              bnn_plus={"weight_clip": 1.5})  # fmt: skip
    with pytest.raises(ValueError, match="`filters` to be 3 positive ints, but got \\(16, 32\\)"):
        melius_larq.BinaryNetSmall(filters=(16, 32))
    with pytest.raises(ValueError, match="Input 6x6 is too small for BinaryNetSmall"):
        melius_larq.BinaryNetSmall(input_shape=(6, 6, 1))


def test_recipes_reach_every_option_and_refuse_conflicts():
    from melius_larq.zoo.recipes import (
        BNN_PLUS_FIELDS,
        apply_overrides,
        bnn_plus_options,
        check_recipe,
        get_recipe,
    )
    from melius_larq.zoo.train import build_model

    fields = {f for f in bnnplus.BNNPlusConfig.__dataclass_fields__} - {"beta_range"}
    assert set(BNN_PLUS_FIELDS.values()) == fields
    recipe = apply_overrides(get_recipe("binarynet_fashion_mnist"), [
        "binarization=bnn+", "bnn_activation=ste", "bnn_activation_clip=0.7",
        "bnn_regularizer=none", "bnn_alpha_in_forward=false", "bnn_weight_clip=none",
        "bnn_reduction=sum", "bnn_weight_estimator=sign_swish", "bnn_beta_end=7",
        "bnn_beta_ramp_epochs=2", "bnn_alpha_sharing=layer",
    ])  # fmt: skip
    check_recipe(recipe)
    assert bnn_plus_options(recipe)["weight_clip"] is None
    layer = bnnplus.bnn_plus_layers(build_model(recipe))[0]
    assert layer.input_quantizer.clip_value == 0.7 and layer.regularizer == "none"
    assert isinstance(layer.kernel_quantizer, bnnplus.SignSwish) and layer.alpha.shape == ()
    assert layer.kernel_constraint.clip_value == 1.0  # BinaryNetSmall's own clip
    bad = [
        (["bnn_beta=10"], "bnn_beta=10.0 conflicts with binarization='ste'"),
        (["binarization=bnn+", "bnn_beta=0"], "`beta` to be a finite float > 0, but got 0.0"),
        (["binarization=bnn+", "bnn_lambda=-1"], "`reg_lambda` .* but got -1.0"),
        (["binarization=bnn+", "bnn_regularizer=ridge"], "but got 'ridge'"),
        (["stem=small"], "stem='small' does not apply to 'BinaryNetSmall'"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            check_recipe(apply_overrides(get_recipe("binarynet_fashion_mnist"), overrides))


def test_train_cli_turns_a_bad_option_into_an_error_line(tmp_path, capsys):
    from melius_larq.cli import main

    code = main(["train", "binarynet_fashion_mnist", "--out", str(tmp_path / "run"), "--set",
                 "binarization=bnn+", "bnn_activation=sigmoid"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "'sigmoid'" in err and "\n" not in err
    assert not (tmp_path / "run" / "config.json").exists()


# LCE accumulates binary dot products exactly and folds α and BatchNorm into multiply-adds, so
# it differs from Keras by float32 re-association only (measured < 1e-6 of the output scale);
# 1e-4 of the scale leaves headroom and still fails on a dropped α or BatchNorm (order 1).
LCE_RTOL = 1e-4


@pytest.mark.parametrize("binarization", ["ste", "bnn+"])
def test_binarynet_small_converts_every_binary_layer_to_lce(binarization):
    lce = require("larq_compute_engine")
    from conftest import trained_like

    from melius_larq.deploy import convert_model, op_inventory

    model = trained_like(melius_larq.BinaryNetSmall(classifier_activation=None,
                                                    binarization=binarization))  # fmt: skip
    buf = convert_model(model)
    ops = op_inventory(buf)
    # five binary convs and the binary dense layer (as a 1x1 binary conv); one float conv
    assert ops.get("LceBconv2d") == 6 and ops.get("CONV_2D") == 1, ops
    assert ops.get("FULLY_CONNECTED") == 1, ops  # the float classifier
    x = _inputs((2, 28, 28, 1))
    expected = model(x, training=False).numpy()
    got = lce.testing.Interpreter(buf).predict(x)
    np.testing.assert_allclose(got, expected, atol=LCE_RTOL * np.abs(expected).max(), rtol=0)
