"""The float networks: trained on Fashion-MNIST, or read back from their run directory."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from melius_larq._compat import tf
from melius_larq._io import atomic_path, write_text_atomic
from melius_larq.zoo.data import load_fashion_mnist, preprocess_fashion_mnist, split_sizes

NETWORKS = ("vgg", "resnet18")
RESNET_RECIPE = "resnet18_fashion_mnist"
VALIDATION_FRACTION = 0.1
EVAL_BATCH = 500
# Adam's peak learning rates: the VGG's own, and the resnet18_fashion_mnist recipe's.
LEARNING_RATES = {"vgg": 0.001, "resnet18": 0.002}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training settings of one float network.

    Attributes:
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: peak learning rate of the cosine schedule; None takes the network's
            default (:data:`LEARNING_RATES`).
        width: ResNet-18 width multiplier (ignored by ``vgg``).
        train_limit: train on the first N training images only; None = all of the training
            part (the validation split is never trained on).
        seed: random seed.
    """

    epochs: int = 15
    batch_size: int = 128
    learning_rate: float | None = None
    width: float = 1.0
    train_limit: int | None = None
    seed: int = 0


def build_cnn(seed: int = 0) -> tf.keras.Model:
    """A small VGG-style CNN for 28x28x1 inputs (6 convs + 2 dense, about 81k kernel weights)."""
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = layers.Input((28, 28, 1))
    x = inputs
    for stage, (filters, convs) in enumerate(((16, 2), (32, 2), (64, 2)), start=1):
        for i in range(convs):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"conv{stage}_{i + 1}")(x)  # fmt: skip
            x = layers.BatchNormalization(name=f"bn{stage}_{i + 1}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(10, name="fc2")(x)
    return tf.keras.Model(inputs, outputs, name="vgg_small_fmnist")


def load_splits(data_dir, eval_limit: int | None = None) -> dict:
    """Preprocessed ``train``, ``validation`` (the last 10 % of the training images) and
    ``test`` arrays; ``eval_limit`` keeps the first N of validation and test."""
    images, labels = load_fashion_mnist("train", data_dir)
    n_train, _ = split_sizes(len(labels), VALIDATION_FRACTION)
    test_images, test_labels = load_fashion_mnist("test", data_dir)
    x, x_test = preprocess_fashion_mnist(images), preprocess_fashion_mnist(test_images)
    cut = slice(None, eval_limit)
    return {
        "train": (x[:n_train], labels[:n_train]),
        "validation": (x[n_train:][cut], labels[n_train:][cut]),
        "test": (x_test[cut], test_labels[cut]),
    }


def top1_accuracy(model: tf.keras.Model, data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    correct = 0
    for start in range(0, len(y), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH], training=False)
        correct += int(np.sum(np.argmax(logits, axis=-1) == y[start : start + EVAL_BATCH]))
    return correct / len(y)


def _run_name(network: str, budget: Budget, train_images: int) -> str:
    width = f"_w{budget.width:g}" if network == "resnet18" else ""
    return (
        f"{network}{width}_e{budget.epochs}_b{budget.batch_size}_lr{budget.learning_rate:g}"
        f"_n{train_images}_s{budget.seed}"
    )


def _resolve(network: str, budget: Budget) -> Budget:
    if budget.learning_rate is None:
        return dataclasses.replace(budget, learning_rate=LEARNING_RATES[network])
    return budget


def _train_vgg(directory: Path, budget: Budget, train, validation, verbose: int) -> dict:
    x, y = train
    model = build_cnn(budget.seed)
    steps = budget.epochs * (len(y) // budget.batch_size)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(
            tf.keras.optimizers.schedules.CosineDecay(budget.learning_rate, max(1, steps))
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Whole batches only, as the recipes' pipeline does: one batch shape, one trace.
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(y), seed=budget.seed, reshuffle_each_iteration=True)
        .batch(budget.batch_size, drop_remainder=True)
    )
    history = model.fit(batches, epochs=budget.epochs, validation_data=validation,
                        validation_batch_size=EVAL_BATCH, verbose=verbose).history  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "model.keras") as tmp:
        model.save(tmp)
    return {"val_accuracy_by_epoch": [float(v) for v in history["val_accuracy"]]}


def _train_resnet(directory: Path, budget: Budget, data_dir, verbose: int) -> dict:
    from melius_larq.zoo.recipes import get_recipe
    from melius_larq.zoo.train import train_or_load

    recipe = dataclasses.replace(
        get_recipe(RESNET_RECIPE),
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        width=budget.width,
        train_limit=budget.train_limit,
        validation_fraction=VALIDATION_FRACTION,
        seed=budget.seed,
    )
    record = train_or_load(recipe, directory, data_dir=data_dir, verbose=verbose)
    return {"recipe": recipe.name, "val_accuracy": record["metrics"].get("val_accuracy")}


def train_float(
    network: str,
    runs_dir: str | Path,
    budget: Budget,
    *,
    data_dir: str | None = None,
    splits: dict | None = None,
    verbose: int = 2,
) -> tuple[tf.keras.Model, dict]:
    """The trained float network, from ``runs_dir`` if it is there, else trained into it.

    The run directory is named after the network, the budget and the number of training
    images, so a re-run with the same settings loads ``model.keras`` instead of training,
    and an interrupted ResNet-18 run resumes from its last epoch.

    Args:
        network: ``"vgg"`` or ``"resnet18"``.
        runs_dir: directory of the training runs.
        budget: the training settings.
        data_dir: Fashion-MNIST location (see :func:`melius_larq.zoo.data.load_fashion_mnist`).
        splits: the preprocessed splits, if already loaded.
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``(model, info)`` with ``info`` holding the run directory, whether it was reused and
        the training time.

    Raises:
        ValueError: for an unknown network.
    """
    if network not in NETWORKS:
        raise ValueError(f"Unknown network {network!r}; expected one of {NETWORKS}.")
    budget = _resolve(network, budget)
    splits = splits or load_splits(data_dir)
    x, y = splits["train"]
    x, y = x[: budget.train_limit], y[: budget.train_limit]
    directory = Path(runs_dir) / _run_name(network, budget, len(y))
    info = {"run_dir": str(directory), "budget": dataclasses.asdict(budget), "train_images": len(y)}
    path = directory / "model.keras"
    if path.exists():
        record = directory / "experiment.json"
        info = (
            json.loads(record.read_text()) if record.exists() else {**info, "train_seconds": None}
        )
        info.update(reused=True)
        return tf.keras.models.load_model(path, compile=False), info
    start = time.perf_counter()
    if network == "vgg":
        info.update(_train_vgg(directory, budget, (x, y), splits["validation"], verbose))
    else:
        info.update(_train_resnet(directory, budget, data_dir, verbose))
    info.update(reused=False, train_seconds=time.perf_counter() - start)
    write_text_atomic(json.dumps(info, indent=2) + "\n", directory / "experiment.json")
    return tf.keras.models.load_model(path, compile=False), info
