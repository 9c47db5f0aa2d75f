"""Validation split, knowledge distillation, image folders and float teachers."""

import json

import numpy as np
import pytest
from conftest import MICRO_MODEL, micro_recipe, require

import melius_larq
from melius_larq._compat import tf
from melius_larq.distillation import (
    DistillationLoss,
    Distiller,
    distillation_loss,
    logits_model,
)
from melius_larq.float_models import FLOAT_MODELS, create_float_model
from melius_larq.zoo.data import DataError, load_fashion_mnist, preprocess_fashion_mnist
from melius_larq.zoo.folder import is_image_folder, scan_image_folder
from melius_larq.zoo.pipeline import make_dataset, split_sizes
from melius_larq.zoo.recipes import apply_overrides, check_recipe, get_recipe
from melius_larq.zoo.sweep import run_sweep
from melius_larq.zoo.train import evaluate, train

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_training_data")

# float32 softmax/log-softmax against float64 numpy on O(1) logits: ~1e-7 relative.
KD_LOSS_RTOL = 1e-5


def _quick(**changes):
    return micro_recipe(**{"epochs": 1, "batch_size": 16, **changes})


def _arrays(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------- validation split


def test_validation_split_is_the_last_tenth_disjoint_and_deterministic(tiny_fmnist):
    images, labels = load_fashion_mnist("train", tiny_fmnist)
    kw = {"batch_size": 64, "data_dir": str(tiny_fmnist)}
    train_x, train_y = _arrays(make_dataset("fashion_mnist", "validation", **kw)[0])
    assert split_sizes(64, 0.1) == (58, 6)
    # validation: the last 6 of the 64 training images, in order
    np.testing.assert_array_equal(train_x, preprocess_fashion_mnist(images[58:]))
    np.testing.assert_array_equal(train_y, labels[58:])
    # training: the first 58 (shuffled), none of the validation images
    ds, size = make_dataset("fashion_mnist", "train", batch_size=2, data_dir=str(tiny_fmnist))
    x, _ = _arrays(ds)
    assert size == 58 and len(x) == 58
    flat = {row.tobytes() for row in preprocess_fashion_mnist(images[:58])}
    assert {row.tobytes() for row in x} == flat
    assert not flat & {row.tobytes() for row in train_x}
    again, _ = _arrays(make_dataset("fashion_mnist", "validation", **kw)[0])
    np.testing.assert_array_equal(again, train_x)
    # train_limit takes from the training part only
    _, limited = make_dataset("fashion_mnist", "train", limit=10, **kw)
    assert limited == 10


@pytest.mark.parametrize("fraction", [-0.1, 0.6, float("nan")])
def test_validation_fraction_out_of_range_is_named(tiny_fmnist, fraction):
    with pytest.raises(DataError, match="validation_fraction="):
        make_dataset("fashion_mnist", "train", batch_size=4, data_dir=str(tiny_fmnist),
                     validation_fraction=fraction)  # fmt: skip


def test_no_validation_split_with_fraction_zero(tiny_fmnist):
    with pytest.raises(DataError, match="no validation split"):
        make_dataset("fashion_mnist", "validation", batch_size=4, data_dir=str(tiny_fmnist),
                     validation_fraction=0.0)  # fmt: skip


def test_training_monitors_validation_and_tests_once(tiny_fmnist, tmp_path, monkeypatch):
    import melius_larq.zoo.train as train_mod

    splits = []
    original = train_mod.make_dataset

    def recording(dataset, split, **kw):
        splits.append(split)
        return original(dataset, split, **kw)

    monkeypatch.setattr(train_mod, "make_dataset", recording)
    result = train(_quick(epochs=2), tmp_path / "run", data_dir=str(tiny_fmnist), verbose=0)
    assert sorted(splits) == ["test", "train", "validation"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["validation_images"] == 6 and metrics["test_images"] == 32
    assert metrics["train_images"] == 58
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert "val_accuracy" in rows[0] and len(rows) == 3
    # the logged validation accuracy is the final model's on the validation split
    val_ds, _ = original("fashion_mnist", "validation", batch_size=256,
                         data_dir=str(tiny_fmnist))  # fmt: skip
    _, val_accuracy = result["model"].evaluate(val_ds, verbose=0)
    assert metrics["val_accuracy"] == pytest.approx(val_accuracy, abs=1e-6)
    test_ds, _ = original("fashion_mnist", "test", batch_size=256, data_dir=str(tiny_fmnist))
    _, test_accuracy = result["model"].evaluate(test_ds, verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-6)
    assert 1 <= metrics["best_val_epoch"] <= 2
    assert (tmp_path / "run" / metrics["best_val_checkpoint"]).exists()


def test_train_or_load_reads_a_finished_run_back(tmp_path, monkeypatch):
    import melius_larq.zoo.train as train_mod

    recipe = get_recipe("meliusnettiny_fashion_mnist")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(recipe.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5, "test_accuracy": 0.25}))
    # alpha_mean has no value in the first epoch; a non-numeric column is left out too
    (run / "history.csv").write_text("epoch,val_accuracy,alpha_mean,note\n0,0.25,,a\n1,0.5,0.1,b\n")
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("trained"))
    record = train_mod.train_or_load(recipe, run)
    assert record["metrics"]["test_accuracy"] == 0.25 and record["train_seconds"] is None
    assert record["history"] == {"epoch": [0.0, 1.0], "val_accuracy": [0.25, 0.5]}
    assert (record["seed"], record["learning_rate"]) == (recipe.seed, recipe.learning_rate)
    with pytest.raises(ValueError, match="epochs"):
        train_mod.train_or_load(apply_overrides(recipe, {"epochs": 9}), run)


def test_sweep_chooses_on_validation_and_reuses_finished_runs(tiny_fmnist, tmp_path, monkeypatch):
    import melius_larq.zoo.train as train_mod

    kw = {"grid": {"learning_rate": ["0.001", "0.01"]}, "overrides": [f"model={MICRO_MODEL}", "epochs=1", "batch_size=16"],
          "seeds": (0,), "data_dir": str(tiny_fmnist), "verbose": 0}  # fmt: skip
    result = run_sweep("meliusnettiny_fashion_mnist", tmp_path / "sweep", **kw)
    best = max(result["configs"], key=lambda c: c["val_mean"])
    assert result["chosen"] == best["tag"]
    for config in result["configs"]:
        metrics = json.loads((tmp_path / "sweep" / config["tag"] / "seed_0" / "metrics.json")
                             .read_text())  # fmt: skip
        assert config["val_mean"] == pytest.approx(metrics["val_accuracy"])
        assert config["test_mean"] == pytest.approx(metrics["test_accuracy"])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "train", no_training)
    assert run_sweep("meliusnettiny_fashion_mnist", tmp_path / "sweep", **kw) == result
    # the run directories are named after the grid only: other --set values must not reuse them
    other = {**kw, "overrides": [f"model={MICRO_MODEL}", "epochs=2", "batch_size=16"]}
    with pytest.raises(ValueError, match=r"seed_0' holds a run with other settings \(epochs\)"):
        run_sweep("meliusnettiny_fashion_mnist", tmp_path / "sweep", **other)
    with pytest.raises(ValueError, match="learning_rate"):
        run_sweep("meliusnettiny_fashion_mnist", tmp_path / "x",
                  grid={"learning_rate": ["fast"]})  # fmt: skip
    # arms are named like grid configurations, so they read the same runs back
    arms = [{"learning_rate": "0.01"}, {"learning_rate": "0.001"}]
    compared = run_sweep("meliusnettiny_fashion_mnist", tmp_path / "sweep",
                         **{**kw, "grid": None}, arms=arms)  # fmt: skip
    assert (compared["reference"], compared["chosen"]) == ("learning_rate=0.01", None)
    by_tag = {c["tag"]: c for c in result["configs"]}
    assert [c["test_mean"] for c in compared["configs"]] == [
        by_tag["learning_rate=0.01"]["test_mean"], by_tag["learning_rate=0.001"]["test_mean"]
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grid": {"epochs": ["1"]}, "arms": [{"epochs": "1"}]}, "either a grid or arms"),
        ({"arms": [{"epochs": "1"}, {"epochs": "1"}]}, r"no arm twice, but got \['epochs=1', "),
        ({"arms": []}, "at least one arm"),
        ({"arms": [{"epochs": "many"}]}, "epochs"),
    ],
)
def test_sweep_refuses_bad_arms_before_training(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_sweep("meliusnettiny_fashion_mnist", tmp_path / "runs", **kwargs)
    assert not (tmp_path / "runs").exists()


def test_sweep_command_line_parses_arms(tmp_path, capsys):
    from melius_larq.zoo.sweep import main

    assert main(["meliusnettiny_fashion_mnist", "--out", str(tmp_path), "--arm",
                 "epochs"]) == 2  # fmt: skip
    assert "Expected --arm KEY=VALUE [KEY=VALUE ...], but got 'epochs'" in capsys.readouterr().err


def test_sweep_table_of_arms_tests_each_arm_against_the_reference():
    from melius_larq.zoo.sweep import _markdown

    def config(tag, tests):
        runs = [{"val_curve": [0.9], "test_accuracy": t} for t in tests]
        return {"tag": tag, "runs": runs, "val_mean": 0.9, "val_std": 0.0, "test_mean": 0.9,
                "test_std": 0.0}  # fmt: skip

    result = {"recipe": "r", "overrides": [], "seeds": [0, 1, 2], "chosen": None,
              "reference": "ref", "configs": [config("ref", [0.04, 0.05, 0.06]),
                                              config("arm", [0.01, 0.02, 0.03])]}  # fmt: skip
    text = _markdown(result)
    assert "Arms compared with the first, **ref**; nothing is chosen." in text
    assert "Chosen" not in text and "| ref (reference) |" in text
    # arm - reference: [1, 2, 3] against [4, 5, 6] points, t = -3.67 with 4 degrees of freedom
    assert "- arm − ref: -3.00 points of test top-1; Welch's t = -3.67 (ν = 4.0)" in text


def test_sweep_table_shows_the_mean_validation_curve_over_seeds():
    from melius_larq.zoo.sweep import _markdown

    runs = [{"val_curve": [0.5, 0.75]}, {"val_curve": [0.7, 0.85]}]
    result = {"recipe": "r", "overrides": [], "seeds": [0, 1], "chosen": "a",
              "configs": [{"tag": "a", "runs": runs, "val_mean": 0.8, "val_std": 0.07,
                           "test_mean": 0.79, "test_std": 0.01}]}  # fmt: skip
    assert "| 60.00 / 80.00 |" in _markdown(result)  # not the first seed's 50.00 / 75.00
    assert "Welch" not in _markdown(result)  # one configuration: nothing to test against


def test_sweep_table_tests_the_chosen_configuration_against_the_others():
    from melius_larq.zoo.sweep import _markdown

    def config(tag, tests):
        runs = [{"val_curve": [0.9], "test_accuracy": t} for t in tests]
        return {"tag": tag, "runs": runs, "val_mean": 0.9, "val_std": 0.0, "test_mean": 0.9,
                "test_std": 0.0}  # fmt: skip

    result = {"recipe": "r", "overrides": [], "seeds": [0, 1, 2], "chosen": "b",
              "configs": [config("a", [0.04, 0.05, 0.06]), config("b", [0.01, 0.02, 0.03])]}  # fmt: skip
    # Welch's t-test of [1, 2, 3] against [4, 5, 6] (points): t = -3.67, 4 degrees of freedom
    assert (
        "- b − a: -3.00 points of test top-1; Welch's t = -3.67 (ν = 4.0), two-sided p = 0.021."
        in (_markdown(result))
    )


# ---------------------------------------------------------------- distillation


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_distillation_loss_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    labels = np.array([0, 2, 1])
    s, t = rng.normal(size=(3, 4)) * 2, rng.normal(size=(3, 4)) * 2
    for w, temp in ((0.5, 4.0), (0.0, 1.0), (1.0, 2.0), (0.3, 0.5)):
        ce = -_np_log_softmax(s)[np.arange(3), labels]
        p_t = np.exp(_np_log_softmax(t / temp))
        kl = (p_t * (_np_log_softmax(t / temp) - _np_log_softmax(s / temp))).sum(-1)
        want = w * ce + (1 - w) * temp**2 * kl
        got = distillation_loss(labels, s, t, kd_weight=w, temperature=temp).numpy()
        np.testing.assert_allclose(got, want, rtol=KD_LOSS_RTOL)
        packed = np.concatenate([labels[:, None], t], -1).astype(np.float32)
        loss = DistillationLoss(w, temp)(packed, s.astype(np.float32)).numpy()
        np.testing.assert_allclose(loss, want.mean(), rtol=KD_LOSS_RTOL)
    # labels alone: the plain cross-entropy
    ce = -_np_log_softmax(s)[np.arange(3), labels]
    np.testing.assert_allclose(DistillationLoss()(labels, s.astype(np.float32)).numpy(),
                               ce.mean(), rtol=KD_LOSS_RTOL)  # fmt: skip
    # a student equal to the teacher has no soft-target loss
    same = distillation_loss(labels, t, t, kd_weight=0.0, temperature=3.0).numpy()
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


@pytest.mark.parametrize(("weight", "temperature", "match"), [
    (-0.1, 4.0, "kd_weight=-0.1"), (1.5, 4.0, "kd_weight=1.5"),
    (0.5, 0.0, "kd_temperature=0.0"), (0.5, -2.0, "kd_temperature=-2.0"),
    (0.5, float("inf"), "kd_temperature=inf"),
])  # fmt: skip
def test_distillation_options_out_of_range(weight, temperature, match):
    with pytest.raises(ValueError, match=match):
        DistillationLoss(weight, temperature)
    with pytest.raises(ValueError, match=match.split("=")[0]):
        check_recipe(_quick(kd_weight=weight, kd_temperature=temperature))


def _dense_model(classes=3, shape=(8, 8, 1), softmax_layer=True, seed=0):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.layers.Input(shape)
    x = tf.keras.layers.Flatten()(inputs)
    if softmax_layer:
        x = tf.keras.layers.Activation("softmax")(tf.keras.layers.Dense(classes)(x))
    else:
        x = tf.keras.layers.Dense(classes, activation="softmax")(x)
    return tf.keras.Model(inputs, x)


def test_logits_models_recover_the_logits():
    x = tf.random.normal((5, 8, 8, 1), seed=1)
    for softmax_layer in (True, False):
        model = _dense_model(softmax_layer=softmax_layer)
        logits = logits_model(model)(x)
        np.testing.assert_allclose(tf.nn.softmax(logits), model(x), rtol=1e-5, atol=1e-7)
    plain = tf.keras.Sequential([tf.keras.layers.Input((4,)), tf.keras.layers.Dense(2)])
    assert logits_model(plain) is plain
    tiny = melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10, stem="small")
    assert logits_model(tiny).outputs[0].node.layer.name == "head_dense"


def test_distiller_trains_the_student_only_and_pulls_it_to_the_teacher():
    teacher, student = _dense_model(seed=1), _dense_model(softmax_layer=False, seed=2)
    before = [w.numpy().copy() for w in teacher.weights]
    x = tf.random.normal((64, 8, 8, 1), seed=3)
    y = tf.argmax(teacher(x), -1)
    gap = lambda: float(tf.reduce_mean(tf.abs(student(x) - teacher(x))))  # noqa: E731
    start = gap()
    distiller = Distiller(student, teacher, kd_weight=0.0, temperature=2.0)
    distiller.compile(tf.keras.optimizers.Adam(0.05), metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=30, batch_size=16, verbose=0, validation_data=(x, y))
    assert gap() < 0.25 * start
    for got, want in zip(teacher.weights, before, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert teacher.trainable  # the teacher object is not modified
    assert len(distiller.trainable_weights) == len(student.trainable_weights)
    # validation reports the student's plain cross-entropy
    ce = tf.keras.losses.sparse_categorical_crossentropy(y, student(x))
    assert history.history["val_loss"][-1] == pytest.approx(float(tf.reduce_mean(ce)), rel=1e-4)
    with pytest.raises(ValueError, match="sets its own loss"):
        distiller.compile("adam", loss="mse")


def test_teacher_that_does_not_fit_the_student():
    student = _dense_model(classes=3)
    with pytest.raises(ValueError, match="4 classes, the student 3"):
        Distiller(student, _dense_model(classes=4))
    with pytest.raises(ValueError, match=r"inputs of shape \(4, 4, 1\)"):
        Distiller(student, _dense_model(shape=(4, 4, 1)))
    with pytest.raises(ValueError, match="must be a Keras model"):
        Distiller(student, "teacher.keras")


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    tf.keras.utils.set_random_seed(0)
    create_float_model("ResNet18", width=0.0625, input_shape=(28, 28, 1), num_classes=10).save(path)
    return path


@pytest.mark.large  # 30-40 s on 2 cores; CI runs it (make test-all)
def test_training_with_a_teacher_file_and_resume(tiny_fmnist, teacher_file, tmp_path):
    run = tmp_path / "run"
    recipe = _quick(teacher=str(teacher_file), kd_weight=0.3, kd_temperature=2.0)
    result = train(recipe, run, data_dir=str(tiny_fmnist), verbose=0)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["teacher"] == str(teacher_file) and 0 <= metrics["test_accuracy"] <= 1
    saved = tf.keras.models.load_model(run / "model.keras", compile=False)
    assert saved.name == result["model"].name and saved.layers[-1].name == "head_softmax"
    assert (run / "checkpoints" / "epoch_001.keras").exists()
    # resume continues the distillation run: one more epoch, optimizer state restored
    resumed = train(apply_overrides(recipe, {"epochs": 2}), run, resume=True,
                    data_dir=str(tiny_fmnist), verbose=0)  # fmt: skip
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert resumed["optimizer_steps"] == 2 * (58 // 16)


@pytest.mark.parametrize(("teacher", "match"), [
    ("missing.keras", "neither a model file"),
    ("not_a_model", "is not a Keras model file"),
    ("wrong_classes", "5 classes, the student 10"),
])  # fmt: skip
def test_bad_teachers_leave_no_run_behind(tiny_fmnist, tmp_path, teacher, match):
    path = tmp_path / f"{teacher}.keras"
    if teacher == "not_a_model":
        path.write_bytes(b"this is not a zip archive")
    elif teacher == "wrong_classes":
        create_float_model("ResNet18", width=0.0625, input_shape=(28, 28, 1),
                           num_classes=5).save(path)  # fmt: skip
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(_quick(teacher=str(path)), run, data_dir=str(tiny_fmnist), verbose=0)
    assert not (run / "config.json").exists()


@pytest.mark.large  # trains a teacher and a student: ~25 s
def test_teacher_from_a_recipe_is_trained_once_in_the_run_dir(tiny_fmnist, tmp_path, monkeypatch):
    from melius_larq.zoo import recipes

    quick_teacher = apply_overrides(recipes.RECIPES["resnet18_fashion_mnist"],
                                    {"epochs": 1, "batch_size": 16, "width": 0.0625})  # fmt: skip
    monkeypatch.setitem(recipes.RECIPES, "resnet18_fashion_mnist", quick_teacher)
    run = tmp_path / "run"
    train(_quick(teacher="resnet18_fashion_mnist"), run, data_dir=str(tiny_fmnist), verbose=0)
    teacher_metrics = json.loads((run / "teacher" / "metrics.json").read_text())
    assert teacher_metrics["validation_images"] == 6  # the student's validation images
    assert json.loads((run / "metrics.json").read_text())["teacher"].endswith("model.keras")
    with pytest.raises(ValueError, match="trains on cifar10"):
        monkeypatch.setitem(recipes.RECIPES, "t", apply_overrides(quick_teacher,
                                                                  {"dataset": "cifar10"}))  # fmt: skip
        train(_quick(teacher="t"), tmp_path / "other", data_dir=str(tiny_fmnist), verbose=0)


# ---------------------------------------------------------------- float models


@pytest.mark.parametrize("name", list(FLOAT_MODELS))
def test_float_models_round_trip_and_check_options(name, tmp_path):
    model = create_float_model(name, width=0.25, input_shape=(28, 28, 1), num_classes=10)
    x = tf.random.normal((2, 28, 28, 1), seed=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-7)
    assert model.output_shape == (None, 10)
    with pytest.raises(ValueError, match="num_classes=1"):
        create_float_model(name, input_shape=(28, 28, 1), num_classes=1)
    with pytest.raises(ValueError, match="=0"):
        create_float_model(name, width=0, input_shape=(28, 28, 1), num_classes=10)
    with pytest.raises(ValueError, match="Unknown float model 'VGG'"):
        create_float_model("VGG", input_shape=(28, 28, 1), num_classes=10)


def _resnet18_hand_count(classes=10, channels=3):
    """Trainable parameters of the CIFAR-style ResNet-18 (He et al. 2016, bias-free convs,
    BatchNorm gamma and beta, a 1x1 conv + BN shortcut where the shape changes), by hand."""
    total, width = 9 * channels * 64 + 2 * 64, 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = width
            total += 9 * first * planes + 2 * planes + 9 * planes * planes + 2 * planes
            if block == 0 and (stride != 1 or first != planes):
                total += first * planes + 2 * planes
            width = planes
    return total + 512 * classes + classes


def test_resnet18_at_full_width_has_the_published_size():
    # 11,173,962 parameters with 10 classes and RGB input, the published count
    model = create_float_model("ResNet18", input_shape=(32, 32, 3), num_classes=10)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == _resnet18_hand_count() == 11_173_962


def test_width_is_refused_for_binary_models(tmp_path, tiny_fmnist):
    with pytest.raises(ValueError, match="width=0.5 applies to the float models"):
        train(_quick(width=0.5), tmp_path / "run", data_dir=str(tiny_fmnist), verbose=0)
    assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------- image folders


def _image_folder(root, classes=("cat", "ant", "bee"), per_class=10, size=(20, 12), mode="L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = size[::-1] if mode == "L" else (*size[::-1], 3)
            pixels = np.clip(label * 80 + rng.integers(0, 30, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i:03d}.png")
    return root


def test_image_folder_classes_split_and_preprocessing(tmp_path):
    root = _image_folder(tmp_path / "images")
    assert is_image_folder(root) and not is_image_folder(tmp_path / "nothing")
    folder = scan_image_folder(root)
    assert folder.classes == ("ant", "bee", "cat")  # sorted: label 0 is "ant"
    assert len(folder.train[0]) == 27 and len(folder.validation[0]) == 3 and folder.test is None
    assert not set(folder.train[0]) & set(folder.validation[0])
    again = scan_image_folder(root)  # deterministic
    assert again.train[0] == folder.train[0] and again.validation[0] == folder.validation[0]
    for path, label in zip(*folder.validation, strict=True):
        assert folder.classes[label] in path
    ds, size = make_dataset("fashion_mnist", "validation", batch_size=8, data_dir=str(root))
    x, y = _arrays(ds)
    assert size == 3 and x.shape == (3, 28, 28, 1)
    # resized (20x12 -> 28x28) and normalised like Fashion-MNIST: "cat" (written first,
    # pixels 0-29, label 2 after sorting) is dark, "bee" (160-189, label 1) bright
    mean, std = 0.286 * 255, 0.353 * 255
    expected = {0: (95 - mean) / std, 1: (175 - mean) / std, 2: (15 - mean) / std}
    for xi, yi in zip(x, y, strict=True):
        assert abs(xi.mean() - expected[int(yi)]) < 0.2
    with pytest.raises(DataError, match="has no test split"):
        make_dataset("fashion_mnist", "test", batch_size=8, data_dir=str(root))


def test_image_folder_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        scan_image_folder(empty)
    one = _image_folder(tmp_path / "one", classes=("only",), per_class=2)
    with pytest.raises(DataError, match="has one class \\('only'\\)"):
        scan_image_folder(one)
    bad = _image_folder(tmp_path / "bad", per_class=2)
    (bad / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="broken.png"):
        scan_image_folder(bad)
    with pytest.raises(DataError, match="is not a directory"):
        scan_image_folder(tmp_path / "missing")


def test_train_eval_and_calibrate_on_an_image_folder(tmp_path):
    from melius_larq.cli.deployment import load_calibration

    root = tmp_path / "data"
    _image_folder(root / "train", per_class=12, mode="RGB")
    _image_folder(root / "test", per_class=4, mode="RGB")
    run = tmp_path / "run"
    recipe = apply_overrides(get_recipe("meliusnet22_cifar10"),
                             {"model": MICRO_MODEL, "epochs": 1,
                              "batch_size": 8, "input_size": 32})  # fmt: skip
    result = train(recipe, run, data_dir=str(root), verbose=0)
    assert result["model"].output_shape == (None, 3) and result["model"].input_shape[-1] == 3
    assert json.loads((run / "classes.json").read_text()) == ["ant", "bee", "cat"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (
        32, 4, 12)  # fmt: skip
    evaluated = evaluate(str(run / "model.keras"), "cifar10", data_dir=str(root))
    assert evaluated["samples"] == 12
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    x = load_calibration(str(root), result["model"], limit=5)
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32


def test_image_folder_in_python_is_the_command_line_reader(tmp_path):
    from melius_larq.zoo import image_folder

    root = _image_folder(tmp_path / "images")
    ds, classes = image_folder(root, input_shape=(28, 28, 1), split="validation", batch_size=2)
    assert classes == ["ant", "bee", "cat"]
    want = _arrays(make_dataset("fashion_mnist", "validation", batch_size=2, data_dir=str(root))[0])
    for got, expected in zip(_arrays(ds), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    train_ds, _ = image_folder(root, input_shape=(32, 32, 3), batch_size=8, augment=True)
    shapes = [tuple(x.shape) for x, _ in train_ds]
    assert shapes == [(8, 32, 32, 3)] * 3  # 27 training images: full batches only
    with pytest.raises(DataError, match=r"input_shape=\(28, 32, 1\): expected \(size, size"):
        image_folder(root, input_shape=(28, 32, 1))
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"holds dataset files"):
        image_folder(root)
    with pytest.raises(DataError, match=r"has no test split"):
        image_folder(_image_folder(tmp_path / "more"), split="test")


def test_tfds_datasets_hold_out_the_end_of_train(monkeypatch):
    """CIFAR-10 and ImageNet through TFDS: ``train[:n]`` / ``train[n:]`` slices and the test
    split (ImageNet's ``validation``), checked on a stand-in builder (no data offline)."""
    import types

    tfds = require("tensorflow_datasets")
    asked = []

    class Builder:
        info = types.SimpleNamespace(splits={
            "train": types.SimpleNamespace(num_examples=50_000),
            "test": types.SimpleNamespace(num_examples=10_000),
            "validation": types.SimpleNamespace(num_examples=50_000),
        })  # fmt: skip

        def download_and_prepare(self, **kwargs):
            pass

        def as_dataset(self, split, as_supervised):
            asked.append(split)
            return tf.data.Dataset.from_tensors((tf.zeros((32, 32, 3), tf.uint8), 0))

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Builder())
    sizes = {
        s: make_dataset("cifar10", s, batch_size=1)[1] for s in ("train", "validation", "test")
    }
    assert asked == ["train[:45000]", "train[45000:]", "test"]
    assert sizes == {"train": 45_000, "validation": 5_000, "test": 10_000}
    asked.clear()
    make_dataset("imagenet2012", "test", batch_size=1, validation_fraction=0.01)
    make_dataset("imagenet2012", "validation", batch_size=1, validation_fraction=0.01)
    assert asked == ["validation", "train[49500:]"]


def test_register_model_refuses_existing_names():
    from melius_larq.registry import register_model

    for name in ("MeliusNet22", "meliusnet22", "ResNet18"):
        with pytest.raises(ValueError, match="already a model name"):
            register_model(name, lambda **kw: None, family="experiment")
