"""Shared test settings: quiet TensorFlow, the --run-large option, small shared models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import functools  # noqa: E402

import pytest  # noqa: E402

import melius_larq  # noqa: E402,F401  (selects Keras 2 before anything imports TensorFlow)

# The smallest input the ImageNet stems accept (the network downsamples 32x); small inputs
# keep building, training and converting every registry model within the suite's budget.
SMALL_SHAPE = (32, 32, 3)
SMALL_CLASSES = 10


@pytest.fixture(autouse=True)
def _free_keras_state():
    """Frees Keras' global graph state after each test: building ~200 models otherwise grows
    a test worker past 8 GiB."""
    yield
    import gc

    from melius_larq._compat import tf

    tf.keras.backend.clear_session()
    gc.collect()


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="also run tests marked large")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    marker = pytest.mark.skip(reason="large test: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(marker)


@functools.cache
def small_model(name: str, **kwargs):
    """A registry model at SMALL_SHAPE returning logits, shared by the tests that only read it."""
    return melius_larq.create_model(
        name,
        input_shape=SMALL_SHAPE,
        num_classes=SMALL_CLASSES,
        classifier_activation=None,
        **kwargs,
    )
