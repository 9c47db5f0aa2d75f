"""Shared test settings: quiet TensorFlow, the --run-large option, small shared models."""

import gzip
import os
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import melius_larq  # noqa: E402  (selects Keras 2 before anything imports TensorFlow)
from melius_larq._compat import tf  # noqa: E402

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


def trained_like(model, seed: int = 0):
    """Gives every BatchNorm of ``model`` statistics like a trained network's, in place.

    Fresh BatchNorms (mean 0, variance 1, gamma 1, beta 0) are identities that a converter
    may drop and a lost statistic would not change; drawn ones (positive scales, non-zero
    shifts, as ``make bench`` uses) make both visible. Returns ``model``.
    """
    from melius_larq.deploy.suite import randomize_batchnorm

    randomize_batchnorm(model, seed=seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            assert np.any(layer.moving_mean.numpy() != 0) and np.any(layer.beta.numpy() != 0)
    return model


def _fingerprint(model) -> float:
    return float(sum(np.abs(w).sum() for w in model.get_weights()))


_SHARED: dict = {}
_USED: set = set()


def small_model(name: str, **kwargs):
    """A registry model at SMALL_SHAPE returning logits, with trained-like BatchNorm
    statistics, shared by the tests that only read it (a test that trains builds its own;
    a test that changes a shared model fails).

    Weights are drawn from a seed derived from the name and options, so a model is the same
    in every run whatever ran before it in the worker. Comparisons of two float runtimes
    through sign functions need this: a pre-sign value within float32 rounding of zero (the
    smallest ones lie ~1e-6 from it, measured on MeliusNet59) can take the other sign in one
    runtime and move the logits far beyond any rounding tolerance, so an unseeded draw makes
    such a test fail at random, rarely, for a correct conversion.
    """
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _SHARED:
        tf.keras.utils.set_random_seed(zlib.crc32(repr(key).encode()) % 2**31)
        model = melius_larq.create_model(
            name,
            input_shape=SMALL_SHAPE,
            num_classes=SMALL_CLASSES,
            classifier_activation=None,
            **kwargs,
        )
        trained_like(model, seed=sum(map(ord, name)))
        _SHARED[key] = (model, _fingerprint(model))
    _USED.add(key)
    return _SHARED[key][0]


@pytest.fixture(autouse=True)
def _shared_models_stay_unchanged():
    _USED.clear()
    yield
    changed = [key[0] for key in _USED if _fingerprint(_SHARED[key][0]) != _SHARED[key][1]]
    assert not changed, f"the test changed the shared model(s) {changed}; build your own"


def write_idx(path, array, *, truncate=0):
    """Writes ``array`` as a gzipped IDX file of unsigned bytes (optionally cut short)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[: len(data) - truncate])


@pytest.fixture()
def tiny_fmnist(tmp_path):
    """A Fashion-MNIST directory with 64 training and 32 test images whose class shows in the
    pixel values (so a few steps of training learn something)."""
    rng = np.random.RandomState(0)
    for split, n in (("train", 64), ("t10k", 32)):
        labels = rng.randint(0, 10, n)
        images = (labels[:, None, None] * 25 + rng.randint(0, 5, (n, 28, 28))).astype(np.uint8)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    return tmp_path


# The deepest registry models take 15-35 s per conversion or save/load round trip on 2 cores;
# the slowest per-model tests run them only in the large set (make test-all, which CI runs).
DEEPEST_MODELS = ("MeliusNet42", "MeliusNet59")


# Per-model tests that run the same code path for every variant and cost 10-20 s per model can
# run in make test on one model per family: the paper's MeliusNet22, the grouped A/B/C family
# (channel shuffle, grouped transitions), BinaryDenseNet (dense blocks only) and the demo's
# MeliusNetTiny; CI (make test-all) runs every model.
FAMILY_MODELS = ("MeliusNet22", "MeliusNetA", "BinaryDenseNet28", "MeliusNetTiny")


def registry_params(names, *, families_only: bool = False):
    """``names`` as pytest parameters, the deepest models marked large.

    With ``families_only`` every model outside :data:`FAMILY_MODELS` is marked large as well.
    """

    def large(name):
        return name in DEEPEST_MODELS or (families_only and name not in FAMILY_MODELS)

    return [pytest.param(n, marks=pytest.mark.large) if large(n) else n for n in names]
