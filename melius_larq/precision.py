"""Keras precision policies for training: one list of choices and one way to apply them."""

from __future__ import annotations

import contextlib

from melius_larq._compat import tf

__all__ = ["PRECISIONS", "precision_policy"]

# float32, or 16-bit compute with float32 variables: bfloat16 (CPUs with AVX512-BF16) or
# float16 (GPUs).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def precision_policy(name: str):
    """Builds models under the Keras policy ``name`` and restores the previous global policy.

    Layers keep the policy they were built with, so a model built inside the block computes in
    ``name`` afterwards.

    Raises:
        ValueError: for a name not in :data:`PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(f"Unknown precision {name!r}; expected one of: {', '.join(PRECISIONS)}.")
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
