"""zoo: RAdam, recipes, data reading, pipelines, training with resume, multi-worker."""

import json
import os
import socket
import statistics
import subprocess
import sys

import numpy as np
import pytest
from conftest import micro_recipe, write_idx

from melius_larq._compat import tf
from melius_larq.optimizers import RAdam
from melius_larq.zoo.data import (
    DataError,
    dataset_inputs,
    load_fashion_mnist,
    preprocess_fashion_mnist,
    read_idx,
)
from melius_larq.zoo.pipeline import make_dataset
from melius_larq.zoo.recipes import RECIPES, apply_overrides, get_recipe
from melius_larq.zoo.train import NaNLossError, train

# float32 RAdam against a float64 reference over 12 steps: relative error ~1e-6 per step.
RADAM_RTOL = 1e-5
# Near the rectification threshold, float32 rho_t = 1999 - ~1994 keeps ~4 digits, so r_t
# and the step are off by up to ~3e-4 of a 0.01 step: 3e-6 per step, absolute.
RADAM_ATOL_AT_THRESHOLD = 1e-5


def _radam_reference(w, grads, lr, b1=0.95, b2=0.999, eps=1e-5, threshold=5.0):
    """float64 RAdam; ``lr`` is a number or one learning rate per step."""
    lrs = lr if isinstance(lr, list) else [lr] * len(grads)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    rho_inf = 2 / (1 - b2) - 1
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            w = w - lr * r * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        else:
            w = w - lr * m / (1 - b1**t)
        yield w


def test_radam_follows_the_update_rule_step_by_step():
    rng = np.random.RandomState(0)
    w0 = rng.normal(size=(5, 3))
    grads = [rng.normal(size=(5, 3)) for _ in range(12)]  # rho_t crosses 5 at step 6
    var = tf.Variable(w0.astype(np.float32))
    opt = RAdam(0.01)
    for g, expected in zip(grads, _radam_reference(w0, grads, 0.01), strict=True):
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        np.testing.assert_allclose(var.numpy(), expected, rtol=RADAM_RTOL, atol=1e-7)


def test_radam_shares_step_scalars_across_variables_in_a_traced_step():
    """Two variables updated in one tf.function step under a cosine schedule: the step's
    scalars are computed once (one pow per moment, not one per variable) and both variables
    follow the update rule."""
    rng = np.random.RandomState(1)
    w0 = [rng.normal(size=(4, 3)), rng.normal(size=(7,))]
    grads = [[rng.normal(size=w.shape) for w in w0] for _ in range(12)]
    variables = [tf.Variable(w.astype(np.float32)) for w in w0]
    opt = RAdam(tf.keras.optimizers.schedules.CosineDecay(0.01, 100))
    opt.build(variables)

    @tf.function
    def step(g):
        opt.apply_gradients(zip(g, variables))

    graph = step.get_concrete_function([tf.constant(g, tf.float32) for g in grads[0]]).graph
    assert sum(op.type == "Pow" for op in graph.get_operations()) == 2  # beta_1^t, beta_2^t
    lrs = [0.01 * 0.5 * (1 + np.cos(np.pi * t / 100)) for t in range(12)]
    expected = [list(_radam_reference(w, [g[i] for g in grads], lrs)) for i, w in enumerate(w0)]
    for t, g in enumerate(grads):
        step([tf.constant(x, tf.float32) for x in g])
        for i, var in enumerate(variables):
            np.testing.assert_allclose(var.numpy(), expected[i][t], rtol=RADAM_RTOL,
                                       atol=RADAM_ATOL_AT_THRESHOLD)  # fmt: skip


def test_radam_serializes_and_validates():
    opt = RAdam(0.003, beta_1=0.9)
    clone = RAdam.from_config(opt.get_config())
    assert clone.beta_1 == 0.9 and clone.epsilon == 1e-5
    with pytest.raises(ValueError, match="beta_1"):
        RAdam(beta_1=1.5)


def test_recipes_and_overrides():
    r = get_recipe("meliusnet22_imagenet")
    assert (r.learning_rate, r.epochs, r.batch_size, r.beta_1, r.epsilon) == (
        0.002,
        120,
        64,
        0.95,
        1e-5,
    )
    r59 = get_recipe("meliusnet59_imagenet")
    assert (r59.learning_rate, r59.epochs, r59.batch_size) == (0.003, 150, 96)
    assert {x.model for x in RECIPES.values()} >= {"MeliusNet22", "BinaryDenseNet45"}
    quick = apply_overrides(r, ["epochs=3", "train_limit=100", "learning_rate=0.01"])
    assert (quick.epochs, quick.train_limit, quick.learning_rate) == (3, 100, 0.01)
    with pytest.raises(ValueError, match="Unknown recipe key 'epoch'"):
        apply_overrides(r, ["epoch=3"])
    with pytest.raises(ValueError, match="expects int, but got 'many'"):
        apply_overrides(r, ["epochs=many"])
    with pytest.raises(ValueError, match="Unknown recipe 'nope'"):
        get_recipe("nope")
    bnn = apply_overrides(r, ["bnn_train_beta=true", "bnn_lambda=none", "precision=mixed_bfloat16"])
    assert (bnn.bnn_train_beta, bnn.bnn_lambda, bnn.precision) == (True, None, "mixed_bfloat16")
    assert apply_overrides(bnn, ["bnn_train_beta=off"]).bnn_train_beta is False
    with pytest.raises(ValueError, match="'bnn_train_beta' expects true or false, but got 'maybe'"):
        apply_overrides(r, ["bnn_train_beta=maybe"])


def test_read_fashion_mnist_from_a_directory(tiny_fmnist):
    images, labels = load_fashion_mnist("train", tiny_fmnist)
    assert images.shape == (64, 28, 28) and images.dtype == np.uint8 and labels.shape == (64,)
    x, y = dataset_inputs("fashion_mnist", (28, 28, 1), limit=5, data_dir=tiny_fmnist,
                          with_labels=True)  # fmt: skip
    test_images, test_labels = load_fashion_mnist("test", tiny_fmnist)
    assert x.shape == (5, 28, 28, 1) and list(y) == list(test_labels[:5])
    np.testing.assert_array_equal(x, preprocess_fashion_mnist(test_images[:5]))


def test_corrupt_truncated_and_missing_data(tiny_fmnist, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_idx(bad / "x-idx3-ubyte.gz", np.zeros((4, 28, 28)), truncate=10)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(bad / "x-idx3-ubyte.gz")
    (bad / "y.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(bad / "y.gz")
    (bad / "z").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad / "z")
    with pytest.raises(
        DataError, match="does not hold the Fashion-MNIST train files.*dataset-fashion-mnist"
    ):
        load_fashion_mnist("train", bad)
    with pytest.raises(DataError, match="is not a directory"):
        load_fashion_mnist("train", tmp_path / "nowhere")


def test_pipeline_batches_and_augments(tiny_fmnist):
    ds, size = make_dataset("fashion_mnist", "train", batch_size=16, augment="flip_crop",
                            data_dir=tiny_fmnist)  # fmt: skip
    x, y = next(iter(ds))
    assert size == 58 and x.shape == (16, 28, 28, 1) and x.dtype == tf.float32  # 64 - 6 validation
    with pytest.raises(DataError, match="Unknown dataset 'mnist'"):
        make_dataset("mnist", "train", batch_size=4)


def _quick(**changes):
    return micro_recipe(**{"epochs": 2, "batch_size": 32, "train_limit": 64, **changes})


class _CrashAfterFirstEpoch(Exception):
    pass


def test_train_resume_after_a_crash(tiny_fmnist, tmp_path, monkeypatch):
    run = tmp_path / "run"
    import melius_larq.zoo.train as train_mod

    class Crash(tf.keras.callbacks.Callback):
        """Dies as the second epoch starts, after epoch 1's checkpoints were written."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise _CrashAfterFirstEpoch

    original = train_mod._StopOnNaN
    monkeypatch.setattr(train_mod, "_StopOnNaN", lambda: [original(), Crash()][1])
    with pytest.raises(_CrashAfterFirstEpoch):
        train(_quick(), run, data_dir=str(tiny_fmnist), verbose=0)
    assert (run / "checkpoints" / "epoch_001.keras").exists()
    with pytest.raises(ValueError, match="already holds a run"):
        train(_quick(), run, data_dir=str(tiny_fmnist), verbose=0)

    class Restored(tf.keras.callbacks.Callback):
        """Keeps the weights the resumed run starts its first epoch with."""

        weights = None

        def on_epoch_begin(self, epoch, logs=None):
            if Restored.weights is None:
                Restored.weights = (epoch, self.model.get_weights())

    monkeypatch.setattr(train_mod, "_StopOnNaN", lambda: [original(), Restored()][1])
    result = train(_quick(), run, resume=True, data_dir=str(tiny_fmnist), verbose=0)
    monkeypatch.setattr(train_mod, "_StopOnNaN", original)
    # the resumed run starts epoch 2 from the weights of the last checkpoint (epoch 1)
    epoch, weights = Restored.weights
    assert epoch == 1
    checkpoint = tf.keras.models.load_model(run / "checkpoints" / "epoch_001.keras", compile=False)
    for got, want in zip(weights, checkpoint.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # the optimizer state came back: 2 epochs x 1 step (58 images, batch 32) in total, not 1
    assert int(result["model"].optimizer.iterations.numpy()) == 2
    assert json.loads((run / "metrics.json").read_text())["optimizer_steps"] == 2
    # optimizer slots and metrics exist before fit: the training step was traced once
    assert result["model"].train_function.experimental_get_tracing_count() == 1
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]
    metrics = json.loads((run / "metrics.json").read_text())
    # the reported test metrics (the last epoch's validation) are the final model's
    test_ds, _ = make_dataset("fashion_mnist", "test", batch_size=256, data_dir=str(tiny_fmnist))
    loss, accuracy = result["model"].evaluate(test_ds, verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)
    for name in ("model.keras", "curves.png", "config.json", "checkpoints/epoch_002.keras"):
        assert (run / name).exists(), name
    assert json.loads((run / "config.json").read_text())["train_limit"] == 64


@pytest.mark.large  # three TensorFlow processes: about a minute; the in-process crash test above
def test_kill_9_and_resume_loses_at_most_one_epoch(tiny_fmnist, tmp_path):
    """A real SIGKILL during training, then `melius-larq train --resume` from the CLI."""
    import signal
    import time
    import zipfile

    run = tmp_path / "run"
    common = [sys.executable, "-m", "melius_larq", "train", "meliusnettiny_fashion_mnist", "--out",
              str(run), "--data-dir", str(tiny_fmnist), "--verbose", "0"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = ["--set", "epochs=40", "batch_size=32", "train_limit=64"]
    proc = subprocess.Popen(common + first, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "epoch_002.keras").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((run / "checkpoints").glob("epoch_*.keras")))
    for path in (run / "checkpoints").glob("epoch_*.keras"):  # no truncated checkpoint
        assert zipfile.ZipFile(path).testzip() is None
    with pytest.raises(subprocess.CalledProcessError) as err:  # only epochs may change
        subprocess.run(common + ["--resume", "--set", "learning_rate=1"], env=env, check=True,
                       capture_output=True, text=True)  # fmt: skip
    assert "only epochs may change, not ['learning_rate']" in err.value.stderr
    target = done + 2
    subprocess.run(common + ["--resume", "--set", f"epochs={target}"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    epochs = [int(line.split(",")[0]) for line in
              (run / "history.csv").read_text().splitlines()[1:]]  # fmt: skip
    # every epoch logged once, in order, ending at the target: nothing lost but the epoch
    # that was running when the process died
    assert epochs == list(range(target))
    assert json.loads((run / "config.json").read_text())["train_limit"] == 64
    assert (run / "metrics.json").exists()
    model = tf.keras.models.load_model(run / "model.keras", compile=False)
    assert model.name == "meliusnettiny"


def test_resume_of_a_bnnplus_run_from_before_the_mean_regularizer_keeps_the_sum(tmp_path):
    from melius_larq.zoo.train import resume_recipe

    old = get_recipe("meliusnettiny_fashion_mnist").to_dict()
    old.update(binarization="bnn+")
    del old["bnn_reduction"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert resume_recipe(tmp_path, old["name"]).bnn_reduction == "sum"


def test_resume_recipe_continues_the_runs_own_config(tmp_path):
    from melius_larq.zoo.train import resume_recipe

    name = "meliusnettiny_fashion_mnist"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(_quick(learning_rate=0.01).to_dict()))
    recipe = resume_recipe(run, name, ["epochs=5"])  # the first run's overrides are kept
    assert (recipe.learning_rate, recipe.train_limit, recipe.epochs) == (0.01, 64, 5)
    assert resume_recipe(run, name) == _quick(learning_rate=0.01)
    with pytest.raises(ValueError, match=r"only epochs may change, not \['learning_rate'\]"):
        resume_recipe(run, name, ["learning_rate=0.01", "learning_rate=1"])
    with pytest.raises(ValueError, match=r"started with recipe 'meliusnettiny_fashion_mnist'"):
        resume_recipe(run, "meliusnet22_cifar10")
    with pytest.raises(ValueError, match="Nothing to resume.*no config.json"):
        resume_recipe(tmp_path / "empty", name)


def test_nan_loss_names_epoch_and_step(tiny_fmnist, tmp_path, monkeypatch):
    import melius_larq.zoo.train as train_mod

    # an infinite learning rate (refused in a recipe) turns the weights into inf/NaN after
    # the first update
    original = train_mod._optimizer
    monkeypatch.setattr(train_mod, "_optimizer", lambda recipe, steps: original(
        apply_overrides(recipe, {"learning_rate": float("inf")}), steps))  # fmt: skip
    with pytest.raises(NaNLossError, match=r"at epoch 1, step 2"):
        train(_quick(epochs=1, batch_size=16), tmp_path / "nan",
              data_dir=str(tiny_fmnist), verbose=0)  # fmt: skip


def test_bnnplus_recipe_in_mixed_bfloat16_saves_a_float32_model(tiny_fmnist, tmp_path):
    from melius_larq.bnnplus import BNNPlusConv2D

    recipe = _quick(epochs=1, precision="mixed_bfloat16", binarization="bnn+",
                    bnn_regularizer="euclidean", bnn_train_beta=True, bnn_beta=3.0)  # fmt: skip
    result = train(recipe, tmp_path / "run", data_dir=str(tiny_fmnist), verbose=0)
    model = result["model"]
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    saved = tf.keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    bnn = [layer for layer in saved.layers if isinstance(layer, BNNPlusConv2D)]
    assert bnn and all(layer.regularizer == "euclidean" for layer in bnn)
    quantizer = bnn[0].input_quantizer
    assert quantizer.train_beta and quantizer.beta == 3.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == (
        "mixed_bfloat16"
    )
    with pytest.raises(ValueError, match="Unknown precision 'float8'"):
        train(_quick(precision="float8"), tmp_path / "bad", data_dir=str(tiny_fmnist), verbose=0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Two worker processes, each importing TensorFlow (45-50 s on 2 cores; with a teacher a minute
# more): in the large set that CI runs (make test-all), to keep make test under 15 minutes.
@pytest.mark.large
@pytest.mark.parametrize("teacher, init", [(False, False), (True, False), (False, True)])
def test_multi_worker_training_ends_with_identical_weights(tiny_fmnist, tmp_path, teacher, init):
    extra = []
    if init:  # from a saved model, one head-only epoch, then one of all layers
        from melius_larq.zoo.recipes import get_recipe
        from melius_larq.zoo.train import build_model

        build_model(get_recipe("meliusnettiny_fashion_mnist")).save(tmp_path / "init.keras")
        extra = [f"init={tmp_path / 'init.keras'}", "freeze_epochs=1", "epochs=2"]
    if teacher:
        from melius_larq.float_models import create_float_model

        path = tmp_path / "teacher.keras"
        create_float_model("ResNet18", width=0.0625, input_shape=(28, 28, 1),
                           num_classes=10).save(path)  # fmt: skip
        extra = [f"teacher={path}"]
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": index}})}  # fmt: skip
        cmd = [sys.executable, "-m", "melius_larq", "train", "meliusnettiny_fashion_mnist",
               "--out", str(tmp_path / "run"), "--strategy", "multi-worker", "--verbose", "0",
               "--data-dir", str(tiny_fmnist), "--set", "epochs=1", "batch_size=32",
               "train_limit=64", *extra]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    import h5py

    # one synchronised run over two replicas, not two independent runs of the same recipe
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and ("teacher" in metrics) == teacher
    files = [tmp_path / "run" / f"weights_worker_{i}.h5" for i in range(2)]
    with h5py.File(files[0], "r") as a, h5py.File(files[1], "r") as b:
        names = []
        a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
        assert names
        for n in names:
            np.testing.assert_array_equal(a[n][()], b[n][()])
        # the weights moved: biases start at 0 and moving means at 0 in every initialisation
        moved = [n for n in names if n.endswith(("bias:0", "moving_mean:0"))]
        assert moved and all(np.any(a[n][()] != 0) for n in moved), moved


def test_demo_resumes_only_an_interrupted_run_of_its_recipe(tmp_path, capsys):
    from melius_larq.cli.demo import DEMO_RECIPE, prepare_training_dir

    recipe = get_recipe(DEMO_RECIPE)
    run = tmp_path / "train"
    assert prepare_training_dir(run, recipe) is False  # nothing there yet
    run.mkdir()
    (run / "config.json").write_text(json.dumps(recipe.to_dict()))
    (run / "history.csv").write_text("epoch\n0\n")
    assert prepare_training_dir(run, recipe) is True  # interrupted, same recipe
    assert (run / "history.csv").exists()
    assert prepare_training_dir(run, apply_overrides(recipe, ["epochs=9"])) is False
    assert not run.exists() and "of another recipe" in capsys.readouterr().out
    run.mkdir()
    (run / "config.json").write_text(json.dumps(recipe.to_dict()))
    (run / "metrics.json").write_text("{}")
    assert prepare_training_dir(run, recipe) is False  # finished: a new demo starts over
    assert not run.exists() and "finished" in capsys.readouterr().out


@pytest.mark.large  # train, convert, verify, int8 and plot (25-30 s); CI's make test-all runs it
def test_demo_runs_end_to_end_on_a_tiny_dataset(tiny_fmnist, tmp_path):
    """The whole `make demo` path (train, convert, verify, benchmark, report) on 64 images."""
    from melius_larq.cli.demo import run_demo

    out = tmp_path / "demo"
    report = run_demo(str(out), overrides={"epochs": 1, "batch_size": 32},
                      data_dir=str(tiny_fmnist), verbose=0, results=str(tmp_path / "docs"))  # fmt: skip
    assert report["lce_top1_agreement"] >= 31 / 32  # 32 test images: one near-tie may flip
    assert report["lce_test_accuracy"] == pytest.approx(report["test_accuracy"], abs=1 / 32)
    assert set(report["phase_seconds"]) == {"train", "convert", "verify", "benchmark"}
    medians = report["latency_medians_ms"]
    assert len(medians) == 5 and all(len(v) == 3 for v in medians.values())
    median = {name: statistics.median(m) for name, m in medians.items()}
    assert report["lce_ms"] == min(median["LCE"], median["LCE + XNNPACK"])
    assert report["lce_int8_ms"] == min(median["LCE int8"], median["LCE int8 + XNNPACK"])
    assert report["lce_xnnpack"] == (median["LCE + XNNPACK"] < median["LCE"])
    deployed = medians["LCE + XNNPACK" if report["lce_xnnpack"] else "LCE"]
    per_round = [f / d for f, d in zip(medians["float"], deployed, strict=True)]
    assert report["speedup_vs_float"] == statistics.median(per_round)
    assert report["speedup_vs_float_range"] == [min(per_round), max(per_round)]
    for name in ("model.tflite", "model_int8.tflite", "report.json", "report.md", "deploy.png",
                 "train/model.keras", "train/curves.png"):  # fmt: skip
        assert (out / name).exists(), name
    assert json.loads((out / "report.json").read_text())["model"] == "MeliusNetTiny"
    for name in ("report.json", "report.md", "deploy.png"):  # --results: the same files
        assert (tmp_path / "docs" / name).read_bytes() == (out / name).read_bytes(), name
