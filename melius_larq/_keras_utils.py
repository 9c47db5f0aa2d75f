"""Small Keras helpers shared by the library and the deploy tools."""

from __future__ import annotations

from collections.abc import Iterator

from melius_larq._compat import tf

__all__ = ["walk_layers"]


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
