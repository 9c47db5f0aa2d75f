"""BNN+: SignSwish gradients, scale regularizers, BNN+ layers, schedules, LCE and the registry."""

import json

import larq as lq
import numpy as np
import pytest
from conftest import require, trained_like

import melius_larq
from melius_larq import bnnplus
from melius_larq._compat import tf

# Central differences of SS_β in float64 with step FD_STEP have a truncation error of about
# FD_STEP² · |SS'''| / 6 <= 1e-8 · β³ / 6 (under 2e-6 at β = 10) and a rounding error of about
# 1e-16 / FD_STEP; the pseudo-gradients are computed in float32 (relative error ~1e-7 of values
# up to β). GRAD_RTOL, relative to the peak gradient β, leaves a factor > 5 over both, while a
# wrong formula (e.g. a missing factor or sign) is off by order 1.
FD_STEP = 1e-4
GRAD_RTOL = 1e-5
# Same ops on the same weights (a reloaded model, or a convolution written out by hand): float32
# round-off of a re-ordered reduction at most.
SAME_GRAPH_ATOL = 1e-5
# LCE accumulates binary dot products exactly and folds α and BatchNorm into one multiply-add
# per channel, so it differs from Keras by float32 re-association only (measured ~1e-6 of the
# output scale); 1e-4 of the scale leaves headroom and still fails on a dropped α (order 1).
LCE_RTOL = 1e-4
BETAS = [1.0, 5.0, 10.0]


def _ss(x, beta):
    """SS_β(x) = 2σ(βx)[1 + βx(1 − σ(βx))] − 1, in float64."""
    s = 1.0 / (1.0 + np.exp(-beta * x))
    return 2.0 * s * (1.0 + beta * x * (1.0 - s)) - 1.0


def _grid():
    # Covers the peak, the negative lobe (|x| > 2.4/β) and the tails; avoids x = 0 exactly
    # only for the finite differences' sake (SS is smooth there too).
    return np.concatenate([np.linspace(-3.0, 3.0, 241), [-1e-3, 1e-3]])


def _json(config):
    """A config as saved (tuples become lists)."""
    return json.loads(json.dumps(config))


def _inputs(shape, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


# SignSwish --------------------------------------------------------------------------------
def test_sign_swish_forward_is_larq_sign():
    x = tf.constant([-2.0, -1e-7, 0.0, 1e-7, 3.0])
    y = bnnplus.sign_swish(x, 5.0)
    np.testing.assert_array_equal(y, [-1, -1, 1, 1, 1])
    np.testing.assert_array_equal(y, lq.quantizers.SteSign()(x))
    np.testing.assert_array_equal(bnnplus.SignSwish(train_beta=True)(x), y)


@pytest.mark.parametrize("beta", BETAS)
def test_sign_swish_x_gradient_matches_finite_differences_of_ss(beta):
    x64 = _grid()
    expected = (_ss(x64 + FD_STEP, beta) - _ss(x64 - FD_STEP, beta)) / (2 * FD_STEP)
    x = tf.constant(x64, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bnnplus.SignSwish(beta)(x)
    got = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(got, expected, atol=GRAD_RTOL * beta, rtol=0)
    assert got[np.argmin(np.abs(x64))] == pytest.approx(beta, rel=1e-5)  # peak β at 0
    assert (got < 0).any(), "SS_β is not monotone: its derivative is negative for |x| > 2.4/β"


@pytest.mark.parametrize("beta", BETAS)
def test_sign_swish_beta_gradient_matches_finite_differences_of_ss(beta):
    x64 = _grid()
    upstream = np.random.RandomState(1).uniform(0.5, 1.5, x64.shape)  # breaks the symmetry
    terms = upstream * (_ss(x64, beta + FD_STEP) - _ss(x64, beta - FD_STEP)) / (2 * FD_STEP)
    expected = terms.sum()
    x = tf.constant(x64, tf.float32)
    b = tf.Variable(beta)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(upstream.astype(np.float32) * bnnplus.sign_swish(x, tf.identity(b)))
    got = float(tape.gradient(loss, b))
    # The β gradient sums len(x) terms upstream · ∂SS/∂β, each within GRAD_RTOL of itself.
    atol = GRAD_RTOL * np.abs(terms).sum()
    assert got == pytest.approx(expected, abs=atol)
    assert abs(expected) > 100 * atol, "the test needs a β gradient well above its tolerance"


def test_sign_swish_gradient_is_finite_where_cosh_overflows():
    x = tf.constant([-100.0, 100.0, 1e4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        b = tf.constant(10.0)
        tape.watch(b)
        y = bnnplus.sign_swish(x, b)
    assert np.isfinite(tape.gradient(y, x)).all() and np.isfinite(tape.gradient(y, b))


def test_trainable_beta_is_tracked_trained_and_clipped():
    inputs = tf.keras.Input((4, 4, 8))
    conv = lq.layers.QuantConv2D(
        4,
        3,
        input_quantizer=bnnplus.SignSwish(5.0, train_beta=True, beta_range=(2.0, 8.0)),
        kernel_quantizer=bnnplus.SignSwish(),
        kernel_constraint=lq.constraints.WeightClip(1.0),
    )
    model = tf.keras.Model(inputs, conv(inputs))
    beta = conv.input_quantizer.beta_variable
    assert any(v is beta for v in model.trainable_variables)
    assert not conv.kernel_quantizer.beta_variable.trainable  # fixed β: not trained
    x = _inputs((2, 4, 4, 8))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) * np.linspace(0.5, 1.5, 4, dtype=np.float32))
    (grad,) = tape.gradient(loss, [beta])
    assert grad is not None and float(grad) != 0.0
    # A huge step pushes β out of range; the optimizer applies the variable's constraint.
    tf.keras.optimizers.SGD(1e6).apply_gradients([(tf.sign(grad), beta)])
    assert float(beta) in (2.0, 8.0)


def test_sign_swish_is_binary_serializable_and_does_not_replace_larqs_swish_sign():
    q = bnnplus.SignSwish(7.0, train_beta=True, beta_range=(1.0, 12.0))
    assert q.precision == 1
    config = lq.quantizers.serialize(q)
    assert config["registered_name"] == "melius_larq>SignSwish"
    restored = lq.quantizers.get(config)
    assert isinstance(restored, bnnplus.SignSwish)
    assert restored.get_config() == q.get_config()
    assert tf.keras.utils.get_registered_object("SwishSign") is lq.quantizers.SwishSign
    with pytest.raises(ValueError, match="within beta_range"):
        bnnplus.SignSwish(30.0)


# Regularizers -----------------------------------------------------------------------------
W = np.array([[0.3, -0.05, 0.9], [-0.4, 0.2, -0.7]], np.float32)  # (inputs, channels)
ALPHA = np.array([0.25, 0.1, 0.5], np.float32)  # no |w| equals α, no w is 0


@pytest.mark.parametrize("regularizer", ["manhattan", "euclidean"])
def test_regularizer_value_and_gradients_match_hand_computation(regularizer):
    d = ALPHA - np.abs(W)
    if regularizer == "manhattan":
        value, dw, dalpha = np.abs(d).sum(), -np.sign(d) * np.sign(W), np.sign(d).sum(0)
    else:
        value, dw, dalpha = (d**2).sum(), -2 * d * np.sign(W), 2 * d.sum(0)
    w, alpha = tf.Variable(W), tf.Variable(ALPHA)
    with tf.GradientTape() as tape:
        r = bnnplus.scale_regularization(w, alpha, regularizer)
    gw, galpha = tape.gradient(r, [w, alpha])
    assert float(r) == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(gw, dw, rtol=1e-6)
    np.testing.assert_allclose(galpha, dalpha, rtol=1e-6)
    alias = {"manhattan": "l1", "euclidean": "l2"}[regularizer]
    assert float(bnnplus.scale_regularization(w, alpha, alias)) == float(r)


def test_unknown_regularizer_is_rejected():
    with pytest.raises(ValueError, match="'manhattan'"):
        bnnplus.scale_regularization(W, ALPHA, "l3")


# Layers -----------------------------------------------------------------------------------
def _conv(**kwargs):
    layer = bnnplus.BNNPlusConv2D(8, 3, padding="same", pad_values=1.0, **kwargs)
    layer.build((None, 5, 5, 4))
    return layer


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("regularizer", ["manhattan", "euclidean"])
def test_loss_is_lambda_times_regularizer_on_the_latent_weights(regularizer, reduction):
    layer = _conv(regularizer=regularizer, reg_lambda=0.01, reduction=reduction)
    (loss,) = layer.losses
    latent = layer.kernel.latent_variable.numpy()
    d = layer.alpha.numpy() - np.abs(latent)
    per_weight = np.abs(d) if regularizer == "manhattan" else d**2
    r = per_weight.mean() if reduction == "mean" else per_weight.sum()
    assert float(loss) == pytest.approx(0.01 * r, rel=1e-5)
    # Perturb one weight without changing its sign: the binary kernel is unchanged, the loss not.
    index = np.unravel_index(np.argmax(np.abs(latent)), latent.shape)
    with lq.context.quantized_scope(True):
        binary_before = layer.kernel.numpy()
    perturbed = latent.copy()
    perturbed[index] *= 0.5
    layer.kernel.latent_variable.assign(perturbed)
    with lq.context.quantized_scope(True):
        np.testing.assert_array_equal(layer.kernel.numpy(), binary_before)
    assert float(layer.losses[0]) != pytest.approx(float(loss), rel=1e-6)


@pytest.mark.parametrize("sharing, shape", [("channel", (8,)), ("layer", ())])
def test_alpha_is_mean_abs_kernel_and_constrained(sharing, shape):
    layer = _conv(alpha_sharing=sharing)
    latent = np.abs(layer.kernel.latent_variable.numpy())
    axes = (0, 1, 2) if sharing == "channel" else None
    assert layer.alpha.shape == shape and layer.alpha.trainable
    np.testing.assert_allclose(layer.alpha, latent.mean(axis=axes), rtol=1e-6)
    # bounded by ALPHA_MIN and by the WeightClip value of the kernel constraint (1.0)
    assert layer.kernel_constraint.clip_value == 1.0
    np.testing.assert_array_equal(
        layer.alpha.constraint(tf.fill(shape or (1,), 5.0)), np.ones(shape or (1,))
    )
    np.testing.assert_array_equal(
        layer.alpha.constraint(tf.fill(shape or (1,), -5.0)),
        np.full(shape or (1,), bnnplus.ALPHA_MIN, np.float32),
    )


@pytest.mark.parametrize("regularizer", ["manhattan", "euclidean"])
def test_alpha_gets_a_nonzero_gradient(regularizer):
    layer = _conv(regularizer=regularizer)
    x = _inputs((2, 5, 5, 4))
    with tf.GradientTape(persistent=True) as tape:
        task = tf.reduce_mean(tf.square(layer(x) - 1.0))
        reg = tf.add_n(layer.losses)
    assert np.all(tape.gradient(task, layer.alpha).numpy() != 0)  # through α · sign(w)
    reg_grad = tape.gradient(reg, layer.alpha).numpy()
    if regularizer == "manhattan":  # λ mean sign(α − |w|): mean |w| is not the median
        d = layer.alpha.numpy() - np.abs(layer.kernel.latent_variable.numpy())
        step = layer.reg_lambda / d.size  # the mean divides each weight's term by the count
        expected = step * np.sign(d).sum(axis=(0, 1, 2))
        # exact multiples of λ/n, summed in float32: λ/(1000 n) tells every count apart
        np.testing.assert_allclose(reg_grad, expected, atol=step / 1000, rtol=0)
        assert np.any(reg_grad != 0)
    else:  # mean |w| is R2's optimum: ∂R2/∂α = 2 Σ (α − |w|) = 0 at initialisation
        np.testing.assert_allclose(reg_grad, 0, atol=1e-6)


def _reference_conv(layer, x):
    """conv(sign x padded with +1, α · sign w), written out by hand."""
    xq = np.where(x >= 0, 1.0, -1.0).astype(np.float32)
    xq = np.pad(xq, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=1.0)
    kernel = np.where(layer.kernel.latent_variable.numpy() >= 0, 1.0, -1.0)
    return tf.nn.conv2d(xq, (kernel * layer.alpha.numpy()).astype(np.float32), 1, "VALID")


def test_kernels_are_exactly_plus_minus_one_and_the_forward_pass_uses_plus_minus_alpha():
    layer = _conv(alpha_sharing="channel")
    layer.alpha.assign(np.linspace(0.1, 0.9, 8).astype(np.float32))
    with lq.context.quantized_scope(True):
        assert set(np.unique(layer.kernel.numpy())) == {-1.0, 1.0}
    x = _inputs((2, 5, 5, 4))
    np.testing.assert_allclose(layer(x), _reference_conv(layer, x), atol=SAME_GRAPH_ATOL)
    unscaled = _conv(alpha_in_forward=False)
    unscaled.alpha.assign(np.full(8, 0.3, np.float32))
    reference = _reference_conv(unscaled, x) / 0.3
    np.testing.assert_allclose(unscaled(x), reference, atol=SAME_GRAPH_ATOL)


def test_dense_layer_scales_by_alpha_and_regularizes():
    layer = bnnplus.BNNPlusDense(6, use_bias=True, bias_initializer="ones", regularizer="l2")
    x = _inputs((3, 10))
    y = layer(x).numpy()
    assert layer.regularizer == "euclidean" and layer.alpha.shape == (6,)
    kernel = np.where(layer.kernel.latent_variable.numpy() >= 0, 1.0, -1.0)
    expected = np.where(x >= 0, 1.0, -1.0) @ (kernel * layer.alpha.numpy()) + 1.0
    np.testing.assert_allclose(y, expected, atol=SAME_GRAPH_ATOL)
    assert len(layer.losses) == 1 and float(layer.losses[0]) > 0
    y3 = layer(np.stack([x, x], axis=1)).numpy()  # rank-3 inputs: applied to the last axis
    np.testing.assert_allclose(y3[:, 0], y, atol=SAME_GRAPH_ATOL)


def _small_bnn_plus_model(sharing="channel"):
    """Float conv -> BNN+ conv -> BN -> BNN+ conv -> BN: LCE-friendly (+1 padding, 32 channels)."""
    tf.keras.utils.set_random_seed(0)  # a fixed draw: see conftest.small_model
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    for i in range(2):
        x = tf.keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = bnnplus.BNNPlusConv2D(
            32, 3, padding="same", pad_values=1.0, use_bias=False, alpha_sharing=sharing,
            input_quantizer=bnnplus.SignSwish(train_beta=i == 1), name=f"binconv{i}",
        )(x)  # fmt: skip
    x = tf.keras.layers.BatchNormalization(name="bn2")(x)
    model = tf.keras.Model(inputs, x)
    rng = np.random.RandomState(0)
    for layer in model.layers:  # non-trivial α and BN statistics
        if isinstance(layer, bnnplus.BNNPlusConv2D):
            # powers of two: alpha * conv is exact in Keras and LCE (see test_lce_conversion.py)
            layer.alpha.assign(2.0 ** -rng.randint(0, 5, layer.alpha.shape))
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, 32).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, 32).astype(np.float32))
    return model


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = _small_bnn_plus_model()
    model.get_layer("binconv1").input_quantizer.beta_variable.assign(7.5)
    model.get_layer("binconv0").reg_lambda_variable.assign(0.25)
    path = tmp_path / "bnn_plus.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    x = _inputs((2, 8, 8, 3))
    np.testing.assert_allclose(loaded(x), model(x), atol=SAME_GRAPH_ATOL, rtol=0)
    for name in ("binconv0", "binconv1"):
        a, b = model.get_layer(name), loaded.get_layer(name)
        assert type(b) is bnnplus.BNNPlusConv2D and _json(b.get_config()) == _json(a.get_config())
        assert isinstance(b.input_quantizer, bnnplus.SignSwish)
        np.testing.assert_array_equal(b.alpha, a.alpha)
    assert float(loaded.get_layer("binconv1").input_quantizer.beta_variable) == 7.5
    assert float(loaded.get_layer("binconv0").reg_lambda_variable) == 0.25
    np.testing.assert_allclose(loaded.losses, model.losses, rtol=1e-6)
    config = tf.keras.utils.serialize_keras_object(model.get_layer("binconv0"))
    assert config["registered_name"] == "melius_larq>BNNPlusConv2D"


def test_larq_and_melius_summaries_count_bnn_plus_convs_as_binary():
    model = _small_bnn_plus_model()
    binary = 2 * 3 * 3 * 32 * 32
    assert lq.models.ModelProfile(model).weight_count(bitwidth=1) == binary
    assert melius_larq.summary(model, print_fn=None)["binary_params"] == binary
    assert melius_larq.summary(model, print_fn=None)["bops"] == binary * 8 * 8


@pytest.mark.parametrize("sharing", ["channel", "layer"])
def test_lce_converts_to_bconv_with_alpha_folded(sharing):
    lce = require("larq_compute_engine")
    from melius_larq.deploy import convert_model, op_inventory

    model = _small_bnn_plus_model(sharing)
    buf = convert_model(model)
    ops = op_inventory(buf)
    # one float stem conv; α and the BNs end up in the bconvs' output transforms (no MUL left),
    # and the second sign is fused into the first bconv's bit-packed output
    assert ops.get("LceBconv2d") == 2 and ops.get("LceQuantize") == 1, ops
    assert ops.get("CONV_2D") == 1 and "MUL" not in ops and "LceDequantize" not in ops, ops
    x = _inputs((3, 8, 8, 3), seed=2)
    expected = model(x, training=False).numpy()
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    np.testing.assert_allclose(got, expected, atol=LCE_RTOL * np.abs(expected).max(), rtol=0)
    # without α the outputs would differ by order 1: the check sees α
    assert not np.allclose(got, _without_alpha(model)(x, training=False), atol=1e-2)


def _without_alpha(model):
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        if isinstance(layer, bnnplus.BNNPlusConv2D):
            layer.alpha_in_forward = False
    return clone


# Schedules --------------------------------------------------------------------------------
def _probe_model():
    inputs = tf.keras.Input((4, 4, 8))
    x = bnnplus.BNNPlusConv2D(8, 3, reg_lambda=0.5, name="binconv")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(x))
    # A zero task loss and a zero learning rate: the reported loss is λ_t · R(w; α), with R fixed.
    # eager: tracing a train step costs more than these few tiny steps
    model.compile(tf.keras.optimizers.SGD(0.0), loss=lambda y, p: 0.0 * tf.reduce_mean(p),
                  run_eagerly=True)  # fmt: skip
    return model


class _Recorder(tf.keras.callbacks.Callback):
    def __init__(self, read):
        super().__init__()
        self.read = read
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(self.read())


def test_regularization_scheduler_changes_lambda_without_recompiling():
    model = _probe_model()
    layer = model.get_layer("binconv")
    r = float(layer.losses[0]) / 0.5
    x, y = _inputs((8, 4, 4, 8)), np.zeros((8, 8), np.float32)
    ramp = bnnplus.RegularizationScheduler(bnnplus.linear_schedule(0.0, 1.0, epochs=2))
    history = model.fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[ramp])
    assert history.history["reg_lambda_scale"] == [0.0, 0.5, 1.0, 1.0]
    np.testing.assert_allclose(
        history.history["loss"], np.array([0, 0.25, 0.5, 0.5]) * r, rtol=1e-5
    )
    assert layer.reg_lambda == 0.5  # the configuration keeps the target λ

    per_batch = bnnplus.RegularizationScheduler(
        bnnplus.linear_schedule(0.0, 1.0, epochs=1), per_batch=True
    )
    recorder = _Recorder(lambda: float(layer.reg_lambda_variable))
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[per_batch, recorder])
    assert recorder.values == [0.0, 0.125, 0.25, 0.375]


def test_beta_scheduler_sets_fixed_betas_and_leaves_trainable_ones():
    model = _small_bnn_plus_model()
    model.compile(tf.keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    fixed = model.get_layer("binconv0").input_quantizer
    trained = model.get_layer("binconv1").input_quantizer
    recorder = _Recorder(lambda: (float(fixed.beta_variable), float(trained.beta_variable)))
    anneal = bnnplus.BetaScheduler(bnnplus.linear_schedule(1.0, 10.0, epochs=3))
    x, y = _inputs((4, 8, 8, 3)), np.zeros((4, 8, 8, 32), np.float32)
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[anneal, recorder])
    assert [v[0] for v in recorder.values] == [1.0, 4.0, 7.0] == history.history["beta"]
    assert len({v[1] for v in recorder.values}) == 3  # trainable β moves with the optimizer

    with pytest.raises(ValueError, match="outside beta_range"):
        model.fit(x, y, verbose=0, callbacks=[bnnplus.BetaScheduler(lambda t: 50.0)])
    plain = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="nothing to schedule"):
        plain.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0,
                  callbacks=[bnnplus.RegularizationScheduler(lambda t: 1.0)])  # fmt: skip


# Registry integration ----------------------------------------------------------------------
def test_registry_model_with_bnn_plus_builds_trains_and_regularizes():
    model = melius_larq.MeliusNet22(
        input_shape=(32, 32, 3), num_classes=10, stem="thumbnail", classifier_activation=None,
        binarization="bnn+", bnn_plus={"regularizer": "euclidean", "train_beta": True},
    )  # fmt: skip
    binary = [layer for layer in model.layers if "binconv" in layer.name]
    assert len(binary) == 34
    assert all(isinstance(layer, bnnplus.BNNPlusConv2D) for layer in binary)
    conv = binary[0]
    assert conv.regularizer == "euclidean" and conv.reg_lambda == 0.1
    assert conv.reduction == "mean"
    assert conv.pad_values == 1.0 and conv.kernel_constraint is None  # the lce preset's
    assert conv.input_quantizer.train_beta and conv.kernel_quantizer.clip_value is None
    assert len(model.losses) == 34 and all(float(loss) > 0 for loss in model.losses)

    x, labels = _inputs((4, 32, 32, 3)), np.arange(4)
    optimizer = tf.keras.optimizers.Adam(1e-2)
    before = {v.name: v.numpy() for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        ce = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(labels, model(x), from_logits=True)
        )
        loss = ce + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads, strict=True):
        assert grad is not None and np.any(grad.numpy() != 0), f"No gradient for {variable.name}"
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    moved = [v.name for v in model.trainable_variables if np.any(v.numpy() != before[v.name])]
    assert any("alpha" in n for n in moved) and any("beta" in n for n in moved)
    assert np.isfinite(float(loss)) and float(loss) > float(ce)


def test_builder_rejects_inconsistent_binarization_options():
    build = melius_larq.MeliusNet22
    with pytest.raises(ValueError, match="binarization"):
        build(binarization="xnor")
    with pytest.raises(ValueError, match="binarization='bnn\\+'"):
        build(bnn_plus={"beta": 10.0})
    with pytest.raises(ValueError, match="Unknown `bnn_plus` option"):
        build(binarization="bnn+", bnn_plus={"lambda": 1e-6})
    with pytest.raises(ValueError, match="alpha_sharing"):
        bnnplus.BNNPlusConfig(alpha_sharing="filter")
    with pytest.raises(ValueError, match="STE weights"):
        build(binarization="bnn+", weights="imagenet")
    assert bnnplus.BNNPlusConfig(regularizer="l1").reg_lambda == 0.003
    assert bnnplus.BNNPlusConfig(regularizer="l1", reduction="sum").reg_lambda == 1e-6
    with pytest.raises(ValueError, match="reg_lambda"):
        bnnplus.BNNPlusConfig(reg_lambda=-1.0)


def test_config_can_use_sign_swish_for_the_weights():
    config = bnnplus.BNNPlusConfig(weight_estimator="sign_swish", beta=10.0, weight_clip=0.5)
    layer = config.conv2d(4, 3, kernel_clip=None)
    layer.build((None, 5, 5, 4))
    assert isinstance(layer.kernel_quantizer, bnnplus.SignSwish)
    assert layer.kernel_quantizer is not layer.input_quantizer
    assert layer.kernel_quantizer.beta == layer.input_quantizer.beta == 10.0
    assert layer.kernel_constraint.clip_value == 0.5 and layer._alpha_upper_bound() == 0.5
    latent = layer.kernel.latent_variable
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(_inputs((1, 5, 5, 4))))
    (grad,) = tape.gradient(loss, [latent])
    assert np.any(grad.numpy() != 0)


@pytest.mark.large
def test_registry_bnn_plus_model_converts_like_the_ste_model():
    lce = require("larq_compute_engine")
    from melius_larq.deploy import convert_model, op_inventory

    kwargs = dict(input_shape=(32, 32, 3), num_classes=10, classifier_activation=None)
    tf.keras.utils.set_random_seed(0)  # a fixed draw: see conftest.small_model
    bnn_plus = trained_like(melius_larq.MeliusNet22(binarization="bnn+", **kwargs))
    rng = np.random.RandomState(0)
    for layer in bnn_plus.layers:
        if isinstance(layer, bnnplus.BNNPlusConv2D):
            # powers of two: alpha * conv is exact in Keras and LCE (see test_lce_conversion.py)
            layer.alpha.assign(2.0 ** -rng.randint(0, 5, layer.alpha.shape))
    buf = convert_model(bnn_plus)
    ste = trained_like(melius_larq.MeliusNet22(**kwargs))  # the same BatchNorm statistics
    assert op_inventory(buf) == op_inventory(convert_model(ste))
    x = _inputs((2, 32, 32, 3))
    expected = bnn_plus(x, training=False).numpy()
    got = lce.testing.Interpreter(buf, use_indirect_bgemm=True).predict(x)
    np.testing.assert_allclose(got, expected, atol=LCE_RTOL * np.abs(expected).max(), rtol=0)
