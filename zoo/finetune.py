"""Starting a training run from trained weights (``Recipe.init``) and training a new head
first (``Recipe.freeze_epochs``).

The source is a ``.keras`` model file, a run directory (its ``model.keras``) or ``imagenet``
(the model's published weights). Weights are copied by layer name: every layer with weights
other than the classifier (the model's last layer with weights, a ``Dense``) must find a
layer of the same name with weights of the same shapes in the source, and the source may
have no backbone layer the model lacks. The classifier is copied too when its shape matches
(same class count) and starts from its fresh initialisation otherwise.

With ``freeze_epochs=N`` the first N epochs train the classifier only: every other layer is
frozen (``trainable=False``, so BatchNorm also keeps its moving statistics). Then every layer
trains for the remaining epochs with a new optimizer at ``fine_tune_learning_rate``. The
weights at the end of the head-only epochs are kept as ``head_phase.h5`` in the run
directory, so a resumed run that had finished them continues with the all-layer epochs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from melius_larq import weights as weights_lib
from melius_larq._compat import tf
from melius_larq._io import atomic_path

__all__ = [
    "HEAD_PHASE_WEIGHTS",
    "classifier_layer",
    "fit_in_phases",
    "load_init_source",
    "set_backbone_trainable",
    "transfer_weights",
]

HEAD_PHASE_WEIGHTS = "head_phase.h5"


def _weighted_layers(model: tf.keras.Model) -> list:
    return [layer for layer in model.layers if layer.weights]


def classifier_layer(model: tf.keras.Model):
    """The classifier: the model's last layer with weights, which must be a ``Dense``.

    Raises:
        ValueError: when the last layer with weights is not a ``Dense`` layer.
    """
    last = _weighted_layers(model)[-1]
    if not isinstance(last, tf.keras.layers.Dense):
        raise ValueError(
            f"{model.name} does not end in a Dense classifier (its last layer with weights is "
            f"{last.name!r}, a {type(last).__name__})."
        )
    return last


def _source_path(init: str) -> Path:
    path = Path(init)
    if path.is_dir():
        path = path / "model.keras"
        if not path.is_file():
            raise ValueError(
                f"init={init!r} is a directory without model.keras: expected a finished run "
                "directory, a .keras model file or imagenet."
            )
        return path
    if not path.is_file():
        raise ValueError(
            f"init={init!r} does not exist: expected a .keras model file, a run directory "
            "or imagenet."
        )
    return path


def load_init_source(recipe, build_model) -> tf.keras.Model:
    """The model whose weights ``recipe.init`` names.

    Args:
        recipe: a recipe with ``init`` set.
        build_model: ``build_model(recipe, num_classes=...)`` of the training module, used
            for ``imagenet``: the recipe's model with its published weights.

    Raises:
        ValueError: for a missing file, a directory without ``model.keras``, a file that is
            not a Keras model, or ``imagenet`` for a model without published weights (all
            naming the value).
    """
    if recipe.init == "imagenet":
        return _published(recipe, build_model)
    path = _source_path(recipe.init)
    try:
        return tf.keras.models.load_model(str(path), compile=False)
    except Exception as err:  # Keras raises many kinds for files that are not models
        raise ValueError(
            f"init={recipe.init!r}: {str(path)!r} is not a Keras model ({err})."
        ) from err


def _published(recipe, build_model) -> tf.keras.Model:
    cfgs = [c for c in weights_lib.PRETRAINED if c.model == recipe.model and c.include_top]
    if not cfgs:
        raise ValueError(
            f"init=imagenet: {recipe.model} has no published ImageNet weights; available: "
            f"{', '.join(weights_lib.list_pretrained()) or 'none'}."
        )
    cfg = cfgs[0]
    if recipe.preset != cfg.preset:
        raise ValueError(
            f"init=imagenet: the published {recipe.model} weights were trained with "
            f"preset={cfg.preset!r}, but the recipe has preset={recipe.preset!r}; set "
            f"preset={cfg.preset}."
        )
    source = build_model(recipe, num_classes=cfg.num_classes)
    weights_lib.load_h5_weights(source, weights_lib.fetch_pretrained(cfg))
    return source


def transfer_weights(source: tf.keras.Model, model: tf.keras.Model, *, init: str) -> bool:
    """Copies ``source``'s weights into ``model`` by layer name, all or nothing.

    Returns:
        True when the classifier was replaced (its shape differs: another class count),
        False when it was copied too.

    Raises:
        ValueError: naming the first backbone layer of ``model`` that found no weights of the
            same shapes in ``source``, or the first backbone layer of ``source`` that ``model``
            lacks.
    """
    head = classifier_layer(model)
    source_head = classifier_layer(source)
    by_name = {layer.name: layer for layer in _weighted_layers(source)}
    assignments = []
    for layer in _weighted_layers(model):
        found = by_name.get(source_head.name if layer is head else layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        fits = found is not None and [tuple(w.shape) for w in found.weights] == shapes
        if layer is head:
            if fits:
                assignments.append((layer, found.get_weights()))
            continue
        if not fits:
            got = "no such layer" if found is None else [tuple(w.shape) for w in found.weights]
            raise ValueError(
                f"init={init!r}: layer {layer.name!r} of {model.name} found no weights in the "
                f"source ({got}; the model needs {shapes}): it holds another architecture, "
                "variant, stem or input size."
            )
        assignments.append((layer, found.get_weights()))
    wanted = {layer.name for layer in _weighted_layers(model)}
    extra = [n for n in by_name if n not in wanted and n != source_head.name]
    if extra:
        raise ValueError(
            f"init={init!r}: the source has layers that {model.name} lacks, e.g. "
            f"{', '.join(extra[:3])}: it holds another architecture or variant."
        )
    for layer, values in assignments:
        layer.set_weights(values)
    return len(assignments) < len(_weighted_layers(model))


def set_backbone_trainable(model: tf.keras.Model, trainable: bool) -> None:
    """Freezes (``False``) or unfreezes every layer of ``model`` but its classifier."""
    head = classifier_layer(model)
    for layer in model.layers:
        if layer is not head:
            layer.trainable = trainable


class _KeepHeadPhase(tf.keras.callbacks.Callback):
    """Saves the student's weights at the end of the last head-only epoch."""

    def __init__(self, model: tf.keras.Model, last_epoch: int, path: Path):
        super().__init__()
        self.student, self.last_epoch, self.path = model, last_epoch, path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.last_epoch:
            with atomic_path(self.path) as tmp:
                self.student.save_weights(str(tmp))


def fit_in_phases(fit_model, model, recipe, *, compile_phase, callbacks, out: Path, resume: bool,
                  fit_kwargs):  # fmt: skip
    """Trains ``fit_model`` for ``recipe.epochs``: the head-only epochs first (if any), then
    every layer. Returns the Keras history of the last ``fit``.

    Args:
        fit_model: the model that ``fit`` runs (``model`` or a ``Distiller`` around it).
        model: the network whose backbone is frozen.
        recipe: the run's recipe.
        compile_phase: ``compile_phase(phase_recipe)`` compiles ``fit_model`` with an
            optimizer for ``phase_recipe`` (its epochs and learning rate). Without head-only
            epochs ``fit_model`` is used as compiled.
        callbacks: ``callbacks(backup_dir, append)``: the callbacks of one ``fit``.
        out: this worker's run directory.
        resume: the run continues an earlier start in ``out``.
        fit_kwargs: further ``fit`` arguments (data, verbosity).
    """
    n = recipe.freeze_epochs
    if not n:  # compiled for the whole run already
        return fit_model.fit(epochs=recipe.epochs, callbacks=callbacks(out / "backup", resume),
                             **fit_kwargs)  # fmt: skip
    kept, head_backup = out / HEAD_PHASE_WEIGHTS, out / "backup_head"
    if kept.exists():  # the head-only epochs had finished
        model.load_weights(str(kept))
        shutil.rmtree(head_backup, ignore_errors=True)
    else:
        set_backbone_trainable(model, False)
        compile_phase(dataclasses.replace(recipe, epochs=n, warmup_epochs=0))
        keep = _KeepHeadPhase(model, n - 1, kept)
        fit_model.fit(epochs=n, callbacks=[*callbacks(head_backup, resume), keep], **fit_kwargs)
        set_backbone_trainable(model, True)
    rate = recipe.fine_tune_learning_rate or recipe.learning_rate
    compile_phase(dataclasses.replace(recipe, epochs=recipe.epochs - n, learning_rate=rate,
                                      warmup_epochs=0))  # fmt: skip
    return fit_model.fit(epochs=recipe.epochs, initial_epoch=n,
                         callbacks=callbacks(out / "backup", True), **fit_kwargs)  # fmt: skip


def describe_init(init: str) -> str:
    """``init`` as the run's metrics record it: an absolute path, or ``imagenet``."""
    return init if init == "imagenet" else os.path.abspath(init)
