"""Starting runs from trained weights (``init=``), head-only epochs (``freeze_epochs=``),
resume across the two phases, and the refusal of bad starts."""

import json

import numpy as np
import pytest
from conftest import micro_recipe, publish_locally, trained_like

from melius_larq._compat import tf
from melius_larq.cli import main
from melius_larq.zoo import finetune
from melius_larq.zoo.recipes import apply_overrides, get_recipe
from melius_larq.zoo.train import build_model, train

CLASSES = ("ant", "bee", "cat")


class _Killed(Exception):
    """Stands in for the process dying at the start of an epoch."""


def _folder(root, per_class=8):
    """A 3-class folder of 28x28 grayscale PNGs whose class shows in the brightness."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = label * 80 + rng.integers(0, 30, (28, 28))
            Image.fromarray(pixels.astype(np.uint8), "L").save(root / name / f"{i}.png")
    return root


def _recipe(**changes):
    """The micro network's recipe (conftest.MICRO_MODEL: a float conv, a binary conv, each
    with BatchNorm, and a classifier): fine-tuning is the same for every registry model."""
    return micro_recipe(**{"epochs": 3, "batch_size": 8, "train_limit": None, **changes})


@pytest.fixture()
def source(tmp_path):
    """A 10-class micro network with weights unlike a fresh one's, saved as .keras."""
    tf.keras.utils.set_random_seed(7)
    model = trained_like(build_model(_recipe(), num_classes=10), seed=7)
    path = tmp_path / "source.keras"
    model.save(path)
    return model, path


def _backbone(model):
    head = finetune.classifier_layer(model)
    return {x.name: x.get_weights() for x in model.layers if x.weights and x is not head}


def _assert_backbone_equal(model, source):
    want = _backbone(source)
    got = _backbone(model)
    assert got.keys() == want.keys()
    for name, weights in got.items():
        for a, b in zip(weights, want[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_transfer_copies_every_backbone_weight_and_replaces_the_head(source):
    src, _ = source
    model = build_model(_recipe(), num_classes=3)
    fresh_head = finetune.classifier_layer(model).get_weights()
    assert finetune.transfer_weights(src, model, init="src") is True
    _assert_backbone_equal(model, src)
    for a, b in zip(finetune.classifier_layer(model).get_weights(), fresh_head, strict=True):
        np.testing.assert_array_equal(a, b)  # a 3-class head: left as initialised
    same = build_model(_recipe(), num_classes=10)
    assert finetune.transfer_weights(src, same, init="src") is False
    for a, b in zip(same.get_weights(), src.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # same classes: the classifier is copied too


def test_transfer_names_the_first_layer_without_weights(source):
    src, _ = source
    other = build_model(_recipe(model="MeliusNet22", stem="thumbnail"), num_classes=3)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"init='src': layer '\w+' of meliusnet22 found no"):
        finetune.transfer_weights(src, other, init="src")
    for a, b in zip(before, other.get_weights(), strict=True):  # all or nothing
        np.testing.assert_array_equal(a, b)


def test_head_only_epochs_leave_the_backbone_as_loaded(source, tmp_path):
    src, path = source
    run = tmp_path / "run"
    recipe = _recipe(init=str(path), freeze_epochs=1, epochs=2)
    train(recipe, run, data_dir=str(_folder(tmp_path / "data")), verbose=0)
    head_only, final = (  # the checkpoints after the head-only and the all-layer epoch
        tf.keras.models.load_model(run / "checkpoints" / f"epoch_{e:03d}.keras", compile=False)
        for e in (1, 2)
    )
    _assert_backbone_equal(head_only, src)  # BatchNorm statistics too
    kernel, bias = finetune.classifier_layer(head_only).get_weights()
    assert kernel.shape[-1] == 3 and np.any(bias != 0)  # the new head (bias starts at 0) trained
    moved = [n for n, w in _backbone(final).items()
             if any(np.any(a != b) for a, b in zip(w, _backbone(src)[n], strict=True))]  # fmt: skip
    assert len(moved) > len(_backbone(src)) // 2  # then every layer trained


# Three runs of two phases each, with a teacher: a few minutes on a busy 2-core machine.
@pytest.mark.large
def test_head_phase_then_all_layers_resume_in_both_with_a_teacher(source, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    """From a run directory, with distillation: killed in the head-only epochs, then in the
    first all-layer epoch, then finished."""
    import melius_larq.zoo.train as train_mod
    from melius_larq.float_models import create_float_model

    src, _ = source
    source_run = tmp_path / "source_run"
    source_run.mkdir()
    src.save(source_run / "model.keras")
    teacher = tmp_path / "teacher.keras"
    create_float_model("ResNet18", width=0.0625, input_shape=(28, 28, 1),
                       num_classes=3).save(teacher)  # fmt: skip
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    recipe = _recipe(init=str(source_run), freeze_epochs=2, fine_tune_learning_rate=0.004,
                     teacher=str(teacher))  # fmt: skip
    original = train_mod._StopOnNaN
    seen = []

    class Crash(tf.keras.callbacks.Callback):
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_epoch_begin(self, epoch, logs=None):
            seen.append((epoch, self.model.student.get_weights()))
            if epoch == self.at:
                raise _Killed

    for at, resume in ((1, False), (2, True), (None, True)):
        monkeypatch.setattr(train_mod, "_StopOnNaN", lambda at=at: [original(), Crash(at)][1])
        if at is None:
            result = train(recipe, run, resume=resume, data_dir=str(data), verbose=0)
        else:
            with pytest.raises(_Killed):
                train(recipe, run, resume=resume, data_dir=str(data), verbose=0)
    monkeypatch.setattr(train_mod, "_StopOnNaN", original)
    checkpoints = [
        tf.keras.models.load_model(run / "checkpoints" / f"epoch_{e:03d}.keras", compile=False)
        for e in (1, 2, 3)
    ]
    # the head-only epochs left every other layer (BatchNorm statistics too) as loaded
    _assert_backbone_equal(checkpoints[1], src)
    kept = build_model(recipe, num_classes=3)
    kept.load_weights(str(run / finetune.HEAD_PHASE_WEIGHTS))
    head = finetune.classifier_layer(kept).get_weights()[0]
    assert np.any(head != finetune.classifier_layer(checkpoints[0]).get_weights()[0])
    # each resume started where the run had stopped: epoch 1 from the first checkpoint,
    # epoch 2 (the first all-layer epoch) from the weights the head-only epochs ended with
    starts = dict(seen)
    assert [e for e, _ in seen] == [0, 1, 1, 2, 2]
    for epoch, reference in ((1, checkpoints[0]), (2, kept)):
        for a, b in zip(starts[epoch], reference.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # then every layer trained
    moved = [n for n, w in _backbone(checkpoints[2]).items()
             if any(np.any(a != b) for a, b in zip(w, _backbone(src)[n], strict=True))]  # fmt: skip
    assert len(moved) > len(_backbone(src)) // 2
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["freeze_epochs"] == 2 and metrics["init"] == str(source_run)
    assert metrics["teacher"] == str(teacher)
    assert metrics["optimizer_steps"] == 3 * (metrics["train_images"] // 8)
    assert result["model"].output_shape == (None, 3)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("init={missing}", r"init='.*missing.keras' does not exist"),
        ("init={empty}", r"init='.*empty' is a directory without model.keras"),
        ("init={notes}", r"init='.*notes.keras': .* is not a Keras model"),
        ("init={other}", r"init='.*other.keras': layer '\w+' of meliusnettiny found no"),
        ("init=imagenet", r"init=imagenet: MeliusNetTiny has no published ImageNet weights"),
        ("freeze_epochs=-1", r"freeze_epochs=-1 must be in \[0, epochs=3\)"),
        ("freeze_epochs=3", r"freeze_epochs=3 must be in \[0, epochs=3\)"),
        ("freeze_epochs=1", r"freeze_epochs=1 needs init="),
    ],
)
def test_bad_starts_give_one_error_line_and_no_run(setting, message, tiny_fmnist, tmp_path,
                                                   capsys):  # fmt: skip
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.keras").write_text("not a model")
    if "{other}" in setting:
        from melius_larq.float_models import create_float_model

        create_float_model("ResNet18", width=0.0625, input_shape=(28, 28, 1),
                           num_classes=10).save(tmp_path / "other.keras")  # fmt: skip
    value = setting.format(missing=tmp_path / "missing.keras", empty=tmp_path / "empty",
                           notes=tmp_path / "notes.keras", other=tmp_path / "other.keras")  # fmt: skip
    run = tmp_path / "run"
    code = main(["train", "meliusnettiny_fashion_mnist", "--out", str(run), "--data-dir",
                 str(tiny_fmnist), "--verbose", "0", "--set", "epochs=3", value])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert __import__("re").search(message, err[0]), err[0]
    assert not run.exists()


def test_imagenet_init_needs_the_preset_of_the_published_weights(tiny_fmnist, tmp_path):
    recipe = apply_overrides(get_recipe("meliusnet22_imagenet"),
                             {"init": "imagenet", "epochs": 2})  # fmt: skip
    with pytest.raises(ValueError, match=r"init=imagenet: .* preset='larq_zoo', but the recipe "
                       r"has preset='lce'; set preset=larq_zoo"):  # fmt: skip
        finetune.load_init_source(recipe, build_model)


def test_experiment_folders_hold_the_split_classes(tiny_fmnist, tmp_path):
    from melius_larq.zoo.data import load_fashion_mnist
    from melius_larq.zoo.experiments import fine_tuning as ft
    from melius_larq.zoo.folder import scan_image_folder

    pretrain, target = ft.prepare_folders(tmp_path, per_class=2, fashion_mnist_dir=tiny_fmnist)
    _, test_labels = load_fashion_mnist("test", tiny_fmnist)
    for folder, classes, per_class in ((pretrain, ft.PRETRAIN_CLASSES, None),
                                       (target, ft.TARGET_CLASSES, 2)):  # fmt: skip
        found = scan_image_folder(folder, validation_fraction=0)
        names = [ft.CLASS_NAMES[c] for c in classes]
        present = sorted(d.name for d in (folder / "train").iterdir())
        assert set(found.classes) <= set(names) and set(present) == set(names)
        counts = [len(list((folder / "train" / n).iterdir())) for n in names]
        assert per_class is None or max(counts) <= per_class
        assert len(found.test[0]) == sum(int(np.sum(test_labels == c)) for c in classes)
    stamp = (target / "train").stat().st_mtime_ns
    assert ft.prepare_folders(tmp_path, per_class=2, fashion_mnist_dir=tiny_fmnist)[1] == target
    assert (target / "train").stat().st_mtime_ns == stamp  # written once, then reused
    with pytest.raises(ValueError, match=r"Final seeds \[0\] must differ"):
        ft.run(tmp_path / "runs", tmp_path / "results", choice_seeds=(0,), final_seeds=(0,))


def test_imagenet_init_loads_the_published_file(tmp_path, monkeypatch):
    """init=imagenet from a local stand-in of the published file (no download in tests)."""

    recipe = apply_overrides(get_recipe("meliusnet22_cifar10"),
                             {"init": "imagenet", "preset": "larq_zoo"})  # fmt: skip
    tf.keras.utils.set_random_seed(3)
    published = trained_like(build_model(recipe, num_classes=1000), seed=3)
    publish_locally(published, tmp_path / "meliusnet22_weights.h5", include_top=True,
                    monkeypatch=monkeypatch, cache=tmp_path / "cache")  # fmt: skip
    source = finetune.load_init_source(recipe, build_model)
    model = build_model(recipe, num_classes=10)
    assert finetune.transfer_weights(source, model, init="imagenet") is True
    _assert_backbone_equal(model, published)
