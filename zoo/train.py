"""Training and evaluation runs: checkpoints, resume, TensorBoard, metrics JSON, curves PNG."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

import melius_larq
from melius_larq._compat import tf
from melius_larq._io import atomic_path, save_figure, write_text_atomic
from melius_larq._optional import pyplot
from melius_larq.bnnplus import BNNPlusConfig, BNNPlusDiagnostics, bnn_plus_layers
from melius_larq.distillation import Distiller
from melius_larq.optimizers import RAdam
from melius_larq.precision import precision_policy
from melius_larq.registry import model_family
from melius_larq.zoo.distill import load_teacher, resolve_teacher
from melius_larq.zoo.finetune import (
    describe_init,
    fit_in_phases,
    load_init_source,
    transfer_weights,
)
from melius_larq.zoo.folder import is_image_folder, scan_image_folder
from melius_larq.zoo.pipeline import DATASETS, IMAGE_SHAPES, make_dataset, num_classes
from melius_larq.zoo.recipes import (
    Recipe,
    apply_overrides,
    bnn_plus_options,
    check_recipe,
    effective_settings,
)

__all__ = [
    "NaNLossError", "check_run_settings", "evaluate", "make_strategy", "read_history",
    "resume_recipe", "train", "train_or_load",
]  # fmt: skip

STRATEGIES = ("default", "mirrored", "multi-worker")


class NaNLossError(RuntimeError):
    """Training produced a non-finite loss."""


class _StopOnNaN(tf.keras.callbacks.Callback):
    """Stops training on a non-finite loss with a message naming the epoch and step."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NaNLossError(
                f"Loss became {loss} at epoch {self.epoch + 1}, step {batch + 1}: lower the "
                "learning rate or check the data. The last epoch's checkpoint is kept."
            )


class _AtomicCheckpoint(tf.keras.callbacks.Callback):
    """Saves the full model every epoch through a temporary file and a rename."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / f"epoch_{epoch + 1:03d}.keras") as tmp:
            getattr(self.model, "student", self.model).save(tmp)  # a Distiller saves its student


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs) or ``multi-worker`` (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi-worker needs the TF_CONFIG environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of: {', '.join(STRATEGIES)}.")


def _is_chief() -> bool:
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (
        task.get("type") == "worker"
        and task.get("index", 0) == 0
        and "chief" not in config.get("cluster", {})
    )


def _task_name() -> str:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return f"{task.get('type', 'chief')}_{task.get('index', 0)}"


# The recipe fields that the builders of each model family take (melius_larq.registry);
# ``binarization`` only when it is not the default, with the recipe's BNN+ options.
_FAMILY_FIELDS = {
    "binary": ("stem", "preset", "binarization"),
    "experiment": ("stem", "preset", "binarization"),
    "baseline": ("binarization",),  # the baseline networks have no stem or preset
    "float": ("width",),
}


def _model_options(recipe: Recipe) -> dict:
    """The builder keyword arguments that the recipe sets for its model's family."""
    options = {f: getattr(recipe, f) for f in _FAMILY_FIELDS[model_family(recipe.model)]}
    if options.get("binarization") == "ste":
        del options["binarization"]
    elif "binarization" in options:
        options["bnn_plus"] = bnn_plus_options(recipe)
    return options


def build_model(recipe: Recipe, num_classes: int | None = None) -> tf.keras.Model:
    """The recipe's model (any registered model), under the recipe's precision policy.

    With a mixed policy the layers compute in 16 bits and keep float32 variables; the
    classifier's softmax stays float32. The global policy is restored afterwards.
    """
    channels = IMAGE_SHAPES[recipe.dataset][1]
    shape = {"input_shape": (recipe.input_size, recipe.input_size, channels),
             "num_classes": num_classes or DATASETS[recipe.dataset]}  # fmt: skip
    with precision_policy(recipe.precision):
        return melius_larq.create_model(recipe.model, **shape, **_model_options(recipe))


def _bnn_plus_callbacks(recipe: Recipe, model: tf.keras.Model) -> list:
    """The BNN+ diagnostics (near-α share, mean α) of a model with BNN+ layers, and the β
    schedule its options ask for; nothing for other models."""
    if not bnn_plus_layers(model):
        return []
    schedule = BNNPlusConfig(**bnn_plus_options(recipe)).callbacks(recipe.epochs)
    return [BNNPlusDiagnostics(model=model), *schedule]


def as_float32(recipe: Recipe, model: tf.keras.Model) -> tf.keras.Model:
    """A float32 copy of a model trained under a mixed policy (same weights), for saving,
    evaluation and conversion; a float32 model is returned as is."""
    if recipe.precision == "float32":
        return model
    copy = build_model(dataclasses.replace(recipe, precision="float32"),
                       num_classes=model.output_shape[-1])  # fmt: skip
    copy.set_weights(model.get_weights())
    copy.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    return copy


def _optimizer(recipe: Recipe, steps_per_epoch: int):
    total = max(1, recipe.epochs * steps_per_epoch)
    lr = recipe.learning_rate
    if recipe.schedule == "cosine":
        warmup = recipe.warmup_epochs * steps_per_epoch
        lr = tf.keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else recipe.learning_rate, total - warmup, alpha=0.0,
            warmup_target=recipe.learning_rate if warmup else None, warmup_steps=warmup,
        )  # fmt: skip
    elif recipe.schedule != "constant":
        raise ValueError(f"Unknown schedule {recipe.schedule!r}; expected 'cosine' or 'constant'.")
    wd = recipe.weight_decay or None
    if recipe.optimizer == "radam":
        return RAdam(lr, recipe.beta_1, recipe.beta_2, recipe.epsilon, weight_decay=wd)
    if recipe.optimizer == "adam":
        return tf.keras.optimizers.Adam(
            lr, recipe.beta_1, recipe.beta_2, recipe.epsilon, weight_decay=wd
        )
    raise ValueError(f"Unknown optimizer {recipe.optimizer!r}; expected 'radam' or 'adam'.")


def _plot_history(history_csv: Path, out: Path, test: dict | None = None) -> None:
    """Loss and accuracy by epoch (training and validation), with the test result of the
    final weights as one marker at the last epoch."""
    plt = pyplot("The training curves")

    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", axes[0]), ("accuracy", axes[1])):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in rows[0]:
                ax.plot(epochs, [float(r[prefix + key]) for r in rows], style,
                        label=("validation " if prefix else "train ") + key)  # fmt: skip
        if test and f"test_{key}" in test:
            ax.plot([epochs[-1]], [test[f"test_{key}"]], "k*", markersize=10,
                    label=f"test {key} (final weights, evaluated once)")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out)


def resume_recipe(run_dir, name: str, overrides=()) -> Recipe:
    """The recipe a run was started with (its ``config.json``), with ``overrides`` applied.

    ``--resume`` continues with what the run was started with, so the overrides of the first
    command need not be repeated; only ``epochs`` may change (to extend a run).

    Raises:
        ValueError: when there is nothing to resume, the run used another recipe, or an
            override other than ``epochs`` is given.
    """
    config = Path(run_dir) / "config.json"
    if not config.exists():
        raise ValueError(f"Nothing to resume in {str(run_dir)!r} (no config.json).")
    saved = json.loads(config.read_text())
    if saved.get("name") != name:
        raise ValueError(
            f"{str(run_dir)!r} was started with recipe {saved.get('name')!r}, not {name!r}."
        )
    fields = {f.name for f in dataclasses.fields(Recipe)}
    if saved.get("binarization") == "bnn+" and "bnn_reduction" not in saved:
        saved["bnn_reduction"] = "sum"  # runs from before the per-weight mean continue as begun
    recipe = Recipe(**{k: v for k, v in saved.items() if k in fields})
    changed = apply_overrides(recipe, overrides)
    bad = [k for k in fields if k != "epochs" and getattr(changed, k) != getattr(recipe, k)]
    if bad:
        raise ValueError(
            f"--resume continues the run's own recipe; only epochs may change, not {bad}."
        )
    return changed


def check_run_settings(recipe: Recipe, run_dir) -> None:
    """Refuses to continue or read back a run directory that holds another recipe's run.

    Raises:
        ValueError: naming the settings in which ``run_dir/config.json`` differs from
            ``recipe`` (fields it lacks count as equal, and so do fields that cannot change
            the run, see :func:`~melius_larq.zoo.recipes.effective_settings`).
    """
    config = Path(run_dir) / "config.json"
    if not config.exists():
        return
    saved = effective_settings(json.loads(config.read_text()))
    wanted = effective_settings(recipe.to_dict())
    changed = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
    if changed:
        raise ValueError(
            f"{str(run_dir)!r} holds a run with other settings ({', '.join(changed)}); "
            "write the runs to another directory."
        )


def _best_validation_epoch(history_csv: Path | None, history: dict) -> dict:
    """The epoch (1-based, over the whole run, resumes included) with the best validation
    accuracy, and the name of its checkpoint."""
    epochs = list(range(1, len(history.get("val_accuracy", [])) + 1))
    values = list(history.get("val_accuracy", []))
    if history_csv is not None and history_csv.exists():
        with open(history_csv) as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_accuracy")]
        epochs = [int(r["epoch"]) + 1 for r in rows]
        values = [float(r["val_accuracy"]) for r in rows]
    if not values:
        return {}
    best = epochs[int(np.argmax(values))]
    return {"best_val_epoch": best, "best_val_accuracy": float(max(values)),
            "best_val_checkpoint": f"checkpoints/epoch_{best:03d}.keras"}  # fmt: skip


def _build_training_state(
    fit_model: tf.keras.Model, model: tf.keras.Model, dataset: tf.data.Dataset
) -> None:
    """Creates the optimizer's slots and the compiled loss and metrics before ``fit``.

    Otherwise they are created inside the first trace of the training step, which
    tf.function then throws away and traces again: building them first saves that second
    trace.
    """
    label_spec = dataset.element_spec[1]
    y_pred = tf.zeros((1, *model.output_shape[1:]))
    y_true = tf.zeros((1, *label_spec.shape[1:]), label_spec.dtype)
    fit_model.optimizer.build(fit_model.trainable_variables)
    fit_model.compiled_loss.build(y_pred)
    fit_model.compiled_metrics.build(y_pred, y_true)


def _check_start(recipe: Recipe, run_dir: Path, resume: bool, strategy: str):
    """The distribution strategy, after the checks that need no data.

    Raises:
        ValueError: for a run directory that holds a run (without ``resume``) or nothing to
            resume, a bad recipe, or a batch size that does not divide across replicas.
    """
    if run_dir.exists() and (run_dir / "config.json").exists() and not resume:
        raise ValueError(f"{str(run_dir)!r} already holds a run: pass --resume or another --out.")
    if resume and not (run_dir / "config.json").exists():
        raise ValueError(f"Nothing to resume in {str(run_dir)!r} (no config.json).")
    check_recipe(recipe)
    dist = make_strategy(strategy)
    replicas = dist.num_replicas_in_sync
    if recipe.batch_size % replicas:
        raise ValueError(
            f"batch_size={recipe.batch_size} does not divide across {replicas} replicas; use "
            f"a multiple of {replicas}."
        )
    return dist


def _datasets(recipe: Recipe, data_dir) -> dict:
    """The training, validation and test datasets (None where there is no such split), their
    sizes, and the number of classes."""
    split = {"data_dir": data_dir, "validation_fraction": recipe.validation_fraction}
    size = {"image_size": recipe.input_size}
    train_ds, train_size = make_dataset(
        recipe.dataset, "train", batch_size=recipe.batch_size, augment=recipe.augment,
        limit=recipe.train_limit, seed=recipe.seed, **size, **split,
    )  # fmt: skip
    eval_batch = max(256, recipe.batch_size)
    val_ds, val_size = None, 0
    if recipe.validation_fraction:
        val_ds, val_size = make_dataset(recipe.dataset, "validation", batch_size=eval_batch,
                                        **size, **split)  # fmt: skip
    test_ds, test_size = None, 0
    folder = is_image_folder(data_dir)
    if not folder or scan_image_folder(data_dir, check_images=False).test is not None:
        test_ds, test_size = make_dataset(recipe.dataset, "test", batch_size=eval_batch,
                                          **size, **split)  # fmt: skip
    return {"train": train_ds, "validation": val_ds, "test": test_ds, "train_size": train_size,
            "validation_size": val_size, "test_size": test_size,
            "classes": num_classes(recipe.dataset, data_dir)}  # fmt: skip


def _compile(fit_model, model, recipe: Recipe, data: dict, teacher: bool) -> None:
    """Compiles what ``fit`` trains with the optimizer of ``recipe`` (a whole run, or one
    phase of a fine-tuning run) and builds its training state."""
    steps = max(1, data["train_size"] // recipe.batch_size)
    loss = tf.keras.losses.SparseCategoricalCrossentropy()
    fit_model.compile(optimizer=_optimizer(recipe, steps), metrics=["accuracy"],
                      jit_compile=recipe.jit_compile, **({} if teacher else {"loss": loss}))  # fmt: skip
    if teacher:
        model.compile(loss=loss, metrics=["accuracy"])
    _build_training_state(fit_model, model, data["train"])


def _compiled_models(recipe: Recipe, data: dict, teacher_path, init_source) -> tuple:
    """``(model, fit_model)``: the compiled model, started from ``init_source``'s weights
    when given, and what ``fit`` trains (the model, or a
    :class:`~melius_larq.distillation.Distiller` around it with the teacher)."""
    model = build_model(recipe, num_classes=data["classes"])
    if init_source is not None:
        transfer_weights(init_source, model, init=recipe.init)
    fit_model = model
    if teacher_path:
        teacher = load_teacher(teacher_path, model)
        fit_model = Distiller(model, teacher, kd_weight=recipe.kd_weight,
                              temperature=recipe.kd_temperature)  # fmt: skip
    _compile(fit_model, model, recipe, data, teacher=bool(teacher_path))
    return model, fit_model


def _write_config(recipe: Recipe, run_dir: Path, data_dir) -> None:
    """``config.json`` (the resolved recipe) and, for an image folder, ``classes.json``."""
    write_text_atomic(json.dumps(recipe.to_dict(), indent=2) + "\n", run_dir / "config.json")
    if is_image_folder(data_dir):
        names = list(scan_image_folder(data_dir, check_images=False).classes)
        write_text_atomic(json.dumps(names, indent=2) + "\n", run_dir / "classes.json")


def _callbacks(recipe: Recipe, model, out: Path, backup: Path, append: bool) -> list:
    """The callbacks of one ``fit``: NaN stop, backup for resume (in ``backup``), BNN+
    diagnostics, history CSV (appended to with ``append``), checkpoints and TensorBoard,
    writing into ``out``."""
    return [
        _StopOnNaN(),
        tf.keras.callbacks.BackupAndRestore(str(backup)),
        *_bnn_plus_callbacks(recipe, model),  # before CSVLogger, which writes their logs
        tf.keras.callbacks.CSVLogger(str(out / "history.csv"), append=append),
        _AtomicCheckpoint(out / "checkpoints"),
        tf.keras.callbacks.TensorBoard(str(out / "tensorboard"), update_freq="epoch"),
    ]


def _final_metrics(recipe, model, fit_model, data: dict, history: dict, history_csv,
                   **extra) -> dict:  # fmt: skip
    """The run's ``metrics.json``: sizes, steps and ``extra``, the final validation metrics and
    the best validation epoch, and the test metrics of the final weights."""
    # a fine-tuning run's head-only epochs ran with an optimizer of their own
    head_steps = recipe.freeze_epochs * max(1, data["train_size"] // recipe.batch_size)
    iterations = int(tf.keras.backend.get_value(fit_model.optimizer.iterations))
    metrics = {"epochs": recipe.epochs, "optimizer_steps": head_steps + iterations,
               "train_images": data["train_size"], "validation_images": data["validation_size"],
               "test_images": data["test_size"], **extra}  # fmt: skip
    if data["validation"] is not None:
        if recipe.precision == "float32":
            # the last epoch's validation ran with the final weights
            val_loss, val_accuracy = history["val_loss"][-1], history["val_accuracy"][-1]
        else:
            val_loss, val_accuracy = model.evaluate(data["validation"], verbose=0)
        metrics.update(val_loss=float(val_loss), val_accuracy=float(val_accuracy))
        metrics.update(_best_validation_epoch(history_csv, history))
    if data["test"] is not None:
        # The test set is evaluated once, with the final weights, after every choice is made.
        loss, accuracy = model.evaluate(data["test"], verbose=0)
        metrics.update(test_loss=float(loss), test_accuracy=float(accuracy))
    else:
        metrics.update(test_loss=None, test_accuracy=None)
    return metrics


def train(
    recipe: Recipe,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    strategy: str = "default",
    data_dir: str | None = None,
    verbose: int = 1,
) -> dict:
    """Trains ``recipe`` into ``run_dir`` and returns the final metrics.

    ``run_dir`` receives ``config.json`` (the resolved recipe), ``backup/`` (state for
    ``resume``: weights, optimizer state and epoch, so the learning-rate schedule continues
    where it stopped), ``checkpoints/epoch_NNN.keras`` every epoch, ``tensorboard/``,
    ``history.csv``, ``model.keras``, ``metrics.json`` and ``curves.png``.

    Raises:
        ValueError: for a run directory that already holds a run (without ``resume``), a
            batch size that does not divide across replicas, or a bad recipe.
        NaNLossError: when the loss becomes non-finite.
    """
    run_dir = Path(run_dir)
    dist = _check_start(recipe, run_dir, resume, strategy)
    chief = _is_chief()
    tf.keras.utils.set_random_seed(recipe.seed)
    # Everything that can fail on bad input (data, teacher) is resolved before the run
    # directory gets its config.json, so a failed start leaves no run behind.
    teacher_path = resolve_teacher(recipe, run_dir, data_dir=data_dir) if recipe.teacher else None
    init_source = load_init_source(recipe, build_model) if recipe.init else None
    data = _datasets(recipe, data_dir)
    with dist.scope():
        model, fit_model = _compiled_models(recipe, data, teacher_path, init_source)
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        _write_config(recipe, run_dir, data_dir)
    # Every worker runs the same callbacks: saving reads sync-on-read variables (BN
    # statistics) through collective ops, which must happen on all workers in the same order.
    # Workers other than the chief write into a scratch directory of their own.
    out = run_dir if chief else run_dir / "workers" / _task_name()

    def compile_phase(phase: Recipe) -> None:
        with dist.scope():
            _compile(fit_model, model, phase, data, teacher=bool(teacher_path))

    history = fit_in_phases(
        fit_model, model, recipe, compile_phase=compile_phase, out=out, resume=resume,
        callbacks=lambda backup, append: _callbacks(recipe, model, out, backup, append),
        fit_kwargs={"x": data["train"], "validation_data": data["validation"],
                    "verbose": verbose},
    ).history  # fmt: skip
    if strategy == "multi-worker":
        # every worker keeps its final weights, so that their equality can be checked
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        with atomic_path(run_dir / f"weights_{task['type']}_{task['index']}.h5") as tmp:
            model.save_weights(str(tmp))
    if recipe.precision != "float32":
        with dist.scope():
            model = as_float32(recipe, model)
    extra = {"replicas": dist.num_replicas_in_sync}
    if teacher_path:
        extra["teacher"] = str(teacher_path)
    if recipe.init:
        extra.update(init=describe_init(recipe.init), freeze_epochs=recipe.freeze_epochs)
    metrics = _final_metrics(recipe, model, fit_model, data, history,
                             run_dir / "history.csv" if chief else None, **extra)  # fmt: skip
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    if chief:
        write_text_atomic(json.dumps(metrics, indent=2) + "\n", run_dir / "metrics.json")
        try:
            _plot_history(run_dir / "history.csv", run_dir / "curves.png", metrics)
        except ImportError as err:  # the run is complete without its plot
            logging.getLogger(__name__).warning("no curves.png: %s", err)
    return {"model": model, **metrics}


# The wall-clock seconds of the call that finished a run, beside the run's own files.
TRAIN_TIME_FILE = "experiment.json"


def read_history(run_dir) -> dict[str, list[float]]:
    """A run's ``history.csv`` as columns of floats (the columns with a number in every
    epoch)."""
    with open(Path(run_dir) / "history.csv") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for key in rows[0] if rows else ():
        try:
            columns[key] = [float(r[key]) for r in rows]
        except (TypeError, ValueError):  # an empty or non-numeric cell
            continue
    return columns


def train_or_load(recipe: Recipe, run_dir, *, data_dir: str | None = None, verbose: int = 1):
    """Trains ``recipe`` into ``run_dir``, or reads the run back when it has finished there.

    An unfinished run (``config.json`` but no ``metrics.json``) resumes where it stopped. The
    seconds of the call that finishes a run are kept in ``run_dir/experiment.json``.

    Returns:
        ``{"run_dir", "seed", "learning_rate", "train_seconds", "metrics", "history"}``:
        ``metrics`` is the run's ``metrics.json``, ``history`` its :func:`read_history`,
        ``train_seconds`` None for a run trained by another command.

    Raises:
        ValueError: for a run directory that holds a run with other settings (see
            :func:`check_run_settings`), before anything trains.
    """
    run_dir = Path(run_dir)
    check_run_settings(recipe, run_dir)
    timing = run_dir / TRAIN_TIME_FILE
    if not (run_dir / "metrics.json").exists():
        print(f"\n== {run_dir} ==", flush=True)
        start = time.perf_counter()
        train(recipe, run_dir, resume=(run_dir / "config.json").exists(), data_dir=data_dir,
              verbose=verbose)  # fmt: skip
        seconds = round(time.perf_counter() - start, 1)
        write_text_atomic(json.dumps({"train_seconds": seconds}) + "\n", timing)
        tf.keras.backend.clear_session()
    return {
        "run_dir": str(run_dir),
        "seed": recipe.seed,
        "learning_rate": recipe.learning_rate,
        "train_seconds": json.loads(timing.read_text()).get("train_seconds")
        if timing.exists()
        else None,
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "history": read_history(run_dir),
    }


def evaluate(
    model_path: str, dataset: str, *, data_dir=None, batch_size: int = 256, split: str = "test"
) -> dict:
    """Loss-free top-1 accuracy of a saved ``.keras`` model on one split of a dataset or of
    an image folder (``data_dir`` with one sub-folder per class; the images are resized to
    the model's input).

    Raises:
        DataError: for missing data, an unknown split or a folder without that split.
        ValueError: when the file is not a Keras model.
    """
    try:
        model = tf.keras.models.load_model(model_path, compile=False)
    except Exception as err:  # Keras raises many kinds for files that are not models
        raise ValueError(f"{str(model_path)!r} is not a Keras model file ({err}).") from err
    height, _, channels = model.input_shape[1:]
    ds, _ = make_dataset(dataset, split, batch_size=batch_size, data_dir=data_dir,
                         image_size=height, channels=channels)  # fmt: skip
    correct, total = 0, 0
    for x, y in ds:
        pred = np.argmax(model(x, training=False), axis=-1)
        correct += int(np.sum(pred == y.numpy()))
        total += len(pred)
    return {f"{split}_accuracy": correct / total, "samples": total}
