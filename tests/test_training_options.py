"""Training options on their success paths: distillation inside ``fit`` with a BatchNorm
teacher and a BNN+ student, negative BatchNorm scales through LCE, the ImageNet and
image-folder augmentations, ``train --strategy mirrored``."""

import larq as lq
import numpy as np
import pytest
from PIL import Image

from melius_larq import bnnplus
from melius_larq._compat import tf
from melius_larq.deploy.verify import keras_outputs
from melius_larq.distillation import Distiller

# float32 evaluation of the same few hundred terms in two orders (Keras' compiled loss vs
# NumPy in float64) differs by a few ulps of the loss.
LOSS_RTOL = 1e-5
# LCE computes a binary conv as an integer popcount and applies the folded BatchNorm as one
# float multiply-add: the float32 rounding of a few hundred terms, relative to the output.
LCE_RTOL = 1e-5


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _teacher(seed=1):
    """A logits model with a BatchNorm whose moving statistics a training-mode call would move."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3)(inputs)
    x = tf.keras.layers.BatchNormalization(momentum=0.5)(x)
    x = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x))
    return tf.keras.Model(inputs, x)


def _bnnplus_student(seed=2):
    """A logits model with a BNN+ binary convolution carrying its scale regularizer."""
    tf.keras.utils.set_random_seed(seed)
    config = bnnplus.BNNPlusConfig(regularizer="euclidean", reg_lambda=20.0)
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    x = config.conv2d(8, 3, padding="same")(x)
    x = tf.keras.layers.Dense(3)(tf.keras.layers.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inputs, x)


def test_distiller_fit_weighs_both_losses_adds_the_regularizers_and_freezes_the_teacher():
    teacher, student = _teacher(), _bnnplus_student()
    assert len(student.losses) == 1  # the BNN+ scale regularizer
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    y = np.arange(16) % 3
    stats = [w.numpy().copy() for w in teacher.non_trainable_weights]
    w, temperature = 0.3, 2.0
    # the loss of the one step, computed before its update, by hand
    s = student(x, training=True).numpy().astype(np.float64)
    t = teacher(x, training=False).numpy().astype(np.float64)
    ce = -_log_softmax(s)[np.arange(16), y]
    p_t = np.exp(_log_softmax(t / temperature))
    kl = (p_t * (_log_softmax(t / temperature) - _log_softmax(s / temperature))).sum(-1)
    regularizer = float(sum(loss.numpy() for loss in student.losses))
    want = np.mean(w * ce + (1 - w) * temperature**2 * kl) + regularizer
    assert regularizer > 0.01 * want  # large enough to be seen if it were left out

    distiller = Distiller(student, teacher, kd_weight=w, temperature=temperature)
    distiller.compile(tf.keras.optimizers.Adam(0.01))
    kernel = student.layers[-1].kernel.numpy().copy()
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(want, rel=LOSS_RTOL)
    # the step updated the student and left the teacher's BatchNorm statistics
    assert not np.array_equal(student.layers[-1].kernel.numpy(), kernel)
    for got, before in zip(teacher.non_trainable_weights, stats, strict=True):
        np.testing.assert_array_equal(got.numpy(), before)


def test_negative_batchnorm_scales_run_in_lce_as_in_keras():
    """A BatchNorm before a sign with negative scales flips those channels' signs; folded into
    the binary convolution's thresholds by the conversion, LCE must compute what Keras does."""
    from melius_larq.deploy import convert_model
    from melius_larq.deploy.flatbuffer import op_inventory
    from melius_larq.deploy.verify import run_lce

    pytest.importorskip("larq_compute_engine")
    tf.keras.utils.set_random_seed(0)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip", use_bias=False, padding="same",
                  pad_values=1.0)  # fmt: skip
    inputs = tf.keras.Input((8, 8, 32))
    x = lq.layers.QuantConv2D(32, 3, **binary)(inputs)
    bn = tf.keras.layers.BatchNormalization()
    x = lq.layers.QuantConv2D(32, 3, **binary)(bn(x))
    x = tf.keras.layers.Dense(5)(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 2.0, 32) * np.where(np.arange(32) % 3 == 0, -1, 1)
    # shifts of the scale of the conv outputs (sums of 288 +-1 terms) so that signs vary
    bn.set_weights([gamma, rng.normal(0, 3, 32), rng.normal(0, 5, 32), rng.uniform(50, 300, 32)])
    assert (bn.gamma.numpy() < 0).sum() == 11
    buf = convert_model(model)
    assert op_inventory(buf)["LceBconv2d"] == 2  # both convs binary, the BatchNorm folded in
    x = rng.uniform(-1, 1, (16, 8, 8, 32)).astype(np.float32)
    want = keras_outputs(model, x)
    got = run_lce(buf, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=LCE_RTOL * np.abs(want).max())


def test_imagenet_augmentation_crops_resizes_flips_and_normalizes(monkeypatch):
    """On images of one colour each, any crop, resize and flip keep the colour: the outputs
    are 224x224 images of the normalised colour."""
    from melius_larq.zoo import pipeline

    colours = np.array([[10, 200, 30], [250, 0, 128], [90, 90, 90]], np.uint8)
    images = np.broadcast_to(colours[:, None, None, :], (3, 60, 80, 3)).copy()

    def fake_tfds(name, split, data_dir, validation_fraction, *args, **kwargs):
        assert name == "imagenet2012" and split == "train"
        return tf.data.Dataset.from_tensor_slices((images, np.arange(3))), 3

    monkeypatch.setattr(pipeline, "_tfds", fake_tfds)
    ds, size = pipeline.make_dataset("imagenet2012", "train", batch_size=3, augment="imagenet")
    x, y = next(iter(ds))
    assert size == 3 and x.shape == (3, 224, 224, 3)
    want = (colours[y.numpy()].astype(np.float32) - pipeline.IMAGENET_MEAN) / pipeline.IMAGENET_STD
    np.testing.assert_allclose(x.numpy(), np.broadcast_to(want[:, None, None], x.shape), atol=1e-4)


def _shifts_of(image, original, pad):
    """The (flip, dy, dx) that map ``original`` onto ``image`` (a crop of its reflected border)."""
    found = []
    for flip in (False, True):
        source = original[:, ::-1] if flip else original
        padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        n = original.shape[0]
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if np.array_equal(padded[dy : dy + n, dx : dx + n], image):
                    found.append((flip, dy - pad, dx - pad))
    return found


def test_image_folder_augmentation_flips_and_crops(tmp_path):
    from melius_larq.zoo.pipeline import make_dataset

    rng = np.random.default_rng(0)
    originals = {}
    for c, name in enumerate(("boot", "shirt")):
        (tmp_path / name).mkdir()
        for i in range(10):
            image = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / name / f"{i}.png")
            originals[(c, i)] = image
    plain, n = make_dataset("fashion_mnist", "train", batch_size=18, data_dir=str(tmp_path),
                            validation_fraction=0.1)  # fmt: skip
    augmented, _ = make_dataset("fashion_mnist", "train", batch_size=18, data_dir=str(tmp_path),
                                augment="flip_crop", validation_fraction=0.1)  # fmt: skip
    (xp, yp), (xa, ya) = next(iter(plain)), next(iter(augmented))
    assert n == 18 and xa.shape == (18, 28, 28, 1)
    # the same images in the same order (one shuffle seed), each flipped and shifted by at
    # most the border of 28 / 14 = 2 pixels
    np.testing.assert_array_equal(yp, ya)
    moves = [_shifts_of(a, p, 2) for a, p in zip(xa.numpy(), xp.numpy(), strict=True)]
    assert all(moves), "an augmented image is no flip and crop of its original"
    assert sum((False, 0, 0) not in m for m in moves) >= 9  # most images did move


@pytest.mark.large  # trains a MeliusNetTiny for an epoch: ~30 s of CPU
def test_train_with_the_mirrored_strategy(tiny_fmnist, tmp_path, monkeypatch, capsys):
    import json

    import melius_larq.zoo.train as train_mod
    from melius_larq.cli import main

    used = []
    real = train_mod.make_strategy
    monkeypatch.setattr(
        train_mod, "make_strategy", lambda name: used.append(real(name)) or used[-1]
    )
    out = tmp_path / "run"
    argv = ["train", "meliusnettiny_fashion_mnist", "--out", str(out), "--strategy", "mirrored",
            "--data-dir", str(tiny_fmnist), "--verbose", "0",
            "--set", "epochs=1", "batch_size=16", "train_limit=32"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [type(s).__name__ for s in used] == ["MirroredStrategy"]
    # one replica on this machine: 32 images in batches of 16 are 2 steps
    assert (result["replicas"], result["train_images"], result["optimizer_steps"]) == (1, 32, 2)
    assert result["test_images"] == 32 and 0 <= result["test_accuracy"] <= 1
    model = tf.keras.models.load_model(out / "model.keras", compile=False)
    assert model.input_shape == (None, 28, 28, 1)
