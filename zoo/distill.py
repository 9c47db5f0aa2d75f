"""Teachers for knowledge distillation in training runs (``Recipe.teacher``)."""

from __future__ import annotations

import json
from pathlib import Path

from melius_larq._compat import tf
from melius_larq.distillation import check_teacher

__all__ = ["load_teacher", "resolve_teacher"]


def resolve_teacher(recipe, run_dir, *, data_dir=None, verbose: int = 2) -> Path:
    """The teacher model file of a recipe: its ``teacher`` as a path, or the ``model.keras``
    of the teacher recipe trained into ``RUN_DIR/teacher`` (trained there once, reused after).

    Raises:
        ValueError: when ``teacher`` is neither an existing model file nor a recipe name, or
            names a recipe for another dataset.
    """
    from melius_larq.zoo.recipes import RECIPES, apply_overrides
    from melius_larq.zoo.train import train

    name = recipe.teacher
    if name in RECIPES:
        teacher_recipe = RECIPES[name]
        if teacher_recipe.dataset != recipe.dataset:
            raise ValueError(
                f"teacher={name!r} trains on {teacher_recipe.dataset}, the student on "
                f"{recipe.dataset}."
            )
        if teacher_recipe.teacher:
            raise ValueError(f"teacher={name!r} itself has a teacher; chains are not supported.")
        teacher_dir = Path(run_dir) / "teacher"
        model_file = teacher_dir / "model.keras"
        if not model_file.exists():
            config = teacher_dir / "config.json"
            teacher_recipe = apply_overrides(
                teacher_recipe, {"validation_fraction": recipe.validation_fraction}
            )
            if config.exists() and json.loads(config.read_text()).get("name") != name:
                raise ValueError(f"{str(teacher_dir)!r} holds another recipe's run.")
            print(f"Training the teacher {name!r} into {teacher_dir} first.", flush=True)
            train(teacher_recipe, teacher_dir, resume=config.exists(), data_dir=data_dir,
                  verbose=verbose)  # fmt: skip
        return model_file
    path = Path(name)
    if not path.is_file():
        raise ValueError(
            f"teacher={name!r} is neither a model file (.keras/.h5) nor a recipe name "
            f"({', '.join(RECIPES)})."
        )
    return path


def load_teacher(path, student: tf.keras.Model) -> tf.keras.Model:
    """Loads a teacher model and checks that it fits ``student``.

    Raises:
        ValueError: when the file is not a Keras model or its input shape or number of
            classes differ from the student's.
    """
    try:
        teacher = tf.keras.models.load_model(str(path), compile=False)
    except Exception as err:  # Keras raises many kinds for files that are not models
        raise ValueError(f"teacher {str(path)!r} is not a Keras model file ({err}).") from err
    check_teacher(teacher, student)
    return teacher
