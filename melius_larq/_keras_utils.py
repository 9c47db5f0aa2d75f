"""Small Keras helpers shared by the library and the deploy tools."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from melius_larq._compat import tf

__all__ = ["replace_layers", "walk_layers"]


def walk_layers(
    model: tf.keras.Model, prefix: str = ""
) -> Iterator[tuple[str, tf.keras.layers.Layer]]:
    """``(path, layer)`` of every layer of ``model``, entering nested models.

    Nested models are not yielded themselves, only their layers, whose path is
    ``outer/inner`` (each part a layer name), prefixed by ``prefix``.
    """
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, tf.keras.Model):
            yield from walk_layers(layer, prefix=f"{path}/")
        else:
            yield path, layer


def replace_layers(
    model: tf.keras.Model,
    replacements: dict[str, Callable[[tf.keras.layers.Layer], tf.keras.layers.Layer]],
    weights: Callable[[str, list], list] | None = None,
) -> tf.keras.Model:
    """A copy of a functional ``model`` with some layers replaced; ``model`` is not modified.

    Args:
        replacements: ``{layer name: function(old layer) -> new layer}``; every other layer
            is rebuilt from its config.
        weights: ``function(layer name, old weights) -> new weights`` for the replaced
            layers; by default they take the old layer's weights unchanged.

    Returns:
        The copy, with every layer's weights set.
    """

    def clone(layer):
        if layer.name in replacements:
            return replacements[layer.name](layer)
        return layer.__class__.from_config(layer.get_config())

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        old = model.get_layer(layer.name).get_weights()
        new = weights(layer.name, old) if weights and layer.name in replacements else old
        if new:
            layer.set_weights(new)
    return copy
