"""The one place that selects Keras 2 (tf_keras) for TensorFlow.

Larq 0.14 and Larq Compute Engine 0.16 only work with Keras 2. TensorFlow 2.16 resolves
``tf.keras`` lazily, on first attribute access, from the environment variable
``TF_USE_LEGACY_KERAS``. This module sets it before TensorFlow is imported and checks the
result, so that every other module of the package can simply ``import tensorflow as tf``
and use ``tf.keras``.
"""

from __future__ import annotations

import os
import sys

_LEGACY_VALUES = ("1", "true", "True")


def _is_keras2(tf_module) -> bool:
    # Under Keras 2 the layer classes come from tf_keras, under Keras 3 from keras.src;
    # neither tf.keras module carries a usable ``__version__``.
    return tf_module.keras.layers.Layer.__module__.startswith("tf_keras")


def ensure_legacy_keras():
    """Select tf_keras (Keras 2) for ``tf.keras`` and return the TensorFlow module.

    Returns:
        The imported ``tensorflow`` module, whose ``tf.keras`` is tf_keras 2.x.

    Raises:
        ImportError: if TensorFlow was already imported and resolved ``tf.keras`` to
            Keras 3, or if tf_keras is not installed.
    """
    already_imported = "tensorflow" in sys.modules
    if os.environ.get("TF_USE_LEGACY_KERAS") not in _LEGACY_VALUES:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf  # noqa: E402  (must follow the environment switch)

    try:
        is_keras2 = _is_keras2(tf)
    except ImportError as err:  # tf_keras missing
        raise ImportError(
            "melius_larq needs Keras 2 through the tf_keras package: pip install 'tf-keras==2.16.0'"
        ) from err
    if not is_keras2:
        hint = (
            "TensorFlow was imported before melius_larq and resolved tf.keras to Keras 3"
            if already_imported
            else "tf.keras resolved to Keras 3"
        )
        raise ImportError(
            f"{hint} (tf.keras.layers.Layer comes from {tf.keras.layers.Layer.__module__!r}), but larq and "
            "Larq Compute Engine need Keras 2. Set the environment variable "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow (or import melius_larq "
            "first), and never mix `import keras` (Keras 3) with larq."
        )
    return tf


tf = ensure_legacy_keras()

__all__ = ["ensure_legacy_keras", "tf"]
