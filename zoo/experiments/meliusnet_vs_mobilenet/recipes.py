"""The recipe family of the comparison: one optimizer (RAdam), schedule (per-step cosine
decay), batch, budget and augmentation for the binary networks and for the float
MobileNet-v1. The binary recipe's model field names one of the binary networks (the
experiment swaps in the others), the float recipe's width one MobileNet width; the experiment
replaces the learning rate by each value of its grid and chooses one per network on
validation."""

from __future__ import annotations

import dataclasses

from melius_larq.zoo.recipes import Recipe, apply_overrides, check_recipe

__all__ = ["BINARY_RECIPE", "FLOAT_RECIPE", "RECIPES", "base_recipe"]
BINARY_RECIPE = "mvm_binary_fashion_mnist"
FLOAT_RECIPE = "mvm_float_fashion_mnist"
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(BINARY_RECIPE, "MeliusNetTiny", "fashion_mnist", 3, 128, 0.006,
               stem="small", input_size=28, augment="flip_crop"),
        Recipe(FLOAT_RECIPE, "MobileNetV1", "fashion_mnist", 3, 128, 0.006,
               width=1.0, input_size=28, augment="flip_crop"),
    )
}  # fmt: skip


def base_recipe(network: dict, epochs: int, train_limit, overrides) -> Recipe:
    """The recipe of one network (``{"name", "kind", "slug"[, "width"]}``) before its learning
    rate and seed are set: the family's recipe with ``overrides``, ``epochs`` and
    ``train_limit``.

    Raises:
        ValueError: for a bad override or recipe field.
    """
    if network["kind"] == "binary":
        recipe = dataclasses.replace(RECIPES[BINARY_RECIPE], model=network["name"],
                                     name=f"mvm_{network['slug']}")  # fmt: skip
    else:
        recipe = dataclasses.replace(RECIPES[FLOAT_RECIPE], width=network["width"],
                                     name=f"mvm_{network['slug']}")  # fmt: skip
    recipe = apply_overrides(recipe, overrides)
    recipe = dataclasses.replace(recipe, epochs=epochs, train_limit=train_limit)
    check_recipe(recipe)
    return recipe
