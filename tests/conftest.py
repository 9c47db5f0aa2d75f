"""Shared test settings: the two tiers, CI's dependency check, small shared models and a
conversion cache.

``make test`` runs every code path once: registry-wide tests on one representative model per
builder path (:data:`REPRESENTATIVE_MODELS`), everything else marked ``large`` stays out.
``make test-all`` (what CI runs) adds ``--run-large``: every registry model and the slow tests.
"""

import gc
import gzip
import importlib
import os
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import melius_larq  # noqa: E402  (selects Keras 2 before anything imports TensorFlow)
from melius_larq._compat import tf  # noqa: E402

# The smallest input the ImageNet stems accept (the network downsamples 32x); small inputs
# keep building, training and converting every registry model within the suite's budget.
SMALL_SHAPE = (32, 32, 3)
SMALL_CLASSES = 10

# In CI a missing pinned dependency or data set fails the run instead of skipping tests.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Pinned test dependencies (requirements-test.txt) and how to get each.
PINNED = {
    "larq_compute_engine": "pip install larq-compute-engine==0.16.0 (make setup)",
    "larq_zoo": "pip install larq-zoo==2.4.0 protobuf==3.20.3 (make setup)",
    "tensorflow_datasets": "pip install tensorflow-datasets (make setup)",
    "matplotlib": "pip install matplotlib (make setup)",
}
FASHION_MNIST_HINT = "apt-get install dataset-fashion-mnist (make data)"


def _missing(message: str):
    """Fails in CI, skips elsewhere: a broken install must never turn CI's tests into skips."""
    if IN_CI:
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(module: str):
    """Imports a pinned dependency, or fails (CI) / skips (elsewhere) naming how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        _missing(f"{module} is not importable ({err}); {PINNED[module]}")


def fashion_mnist_or_skip(split: str = "train"):
    """Fashion-MNIST images and labels of ``split``, or fail (CI) / skip naming the package."""
    from melius_larq.zoo.data import DataError, load_fashion_mnist

    try:
        return load_fashion_mnist(split)
    except DataError as err:
        _missing(f"Fashion-MNIST is not installed ({err}); {FASHION_MNIST_HINT}")


def pytest_sessionstart(session):
    """In CI, one line and a failed run before any test when the stack is incomplete."""
    if not IN_CI:
        return
    missing = []
    for module, hint in PINNED.items():
        try:
            importlib.import_module(module)
        except ImportError as err:
            missing.append(f"{module} ({err}): {hint}")
    from melius_larq.zoo.data import DEBIAN_FASHION_MNIST

    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        missing.append(f"Fashion-MNIST ({DEBIAN_FASHION_MNIST}): {FASHION_MNIST_HINT}")
    if missing:
        pytest.exit("CI needs the pinned stack; missing: " + "; ".join(missing), returncode=3)


@pytest.fixture(autouse=True)
def _free_keras_state():
    """Frees Keras' global graph state after each test, and collects garbage once a worker
    holds more than :data:`COLLECT_ABOVE_BYTES` and has grown by :data:`COLLECT_EVERY_BYTES`
    since its last collection: building ~200 models (make test-all) otherwise grows a worker
    past 8 GiB, while a full collection (about 1 s in a worker that built many models) after
    each of make test's ~700 tests costs more time than the tests that build models."""
    yield
    tf.keras.backend.clear_session()
    resident = _resident_bytes()
    if resident > COLLECT_ABOVE_BYTES and resident > _COLLECTED_AT[0] + COLLECT_EVERY_BYTES:
        gc.collect()
        _COLLECTED_AT[0] = _resident_bytes()


COLLECT_ABOVE_BYTES = 3 * 2**30
COLLECT_EVERY_BYTES = 2**30
_COLLECTED_AT = [0]  # resident bytes after this worker's last collection


def _resident_bytes() -> int:
    """This process's resident memory (Linux), or 0 where /proc is not available."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _check_xdist_groups(config, items) -> None:
    """Stops the run when ``--dist loadgroup`` did not group the modules that share fixtures:
    pytest-xdist marks a grouped test by a ``@group`` suffix on its node id (pytest 9 ignores
    it, and every module fixture is then built again on each worker)."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers (loadgroup)
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        pytest.exit(
            f"--dist loadgroup did not group {lost[0]} (pytest {pytest.__version__}): install "
            "the pytest and pytest-xdist of requirements-test.txt (make setup)",
            returncode=3,
        )


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="also run tests marked large")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    _check_xdist_groups(config, items)
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


def binary_branch(x):
    """``concat(x, binary_conv(BN(x)))``: a dense-block step with a ±1-padded binary conv."""
    import larq as lq

    y = tf.keras.layers.BatchNormalization()(x)
    y = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False,
                              input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip")(y)  # fmt: skip
    return tf.keras.layers.Concatenate()([x, y])


def small_bnn():
    """A float stem, one :func:`binary_branch` and a float head on 28x28x1 inputs: the
    small BNN of the int8 tests (trained copy: tests/fixtures/int8/make_models.py)."""
    inp = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.MaxPool2D(2)(x)
    x = binary_branch(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.MaxPool2D(2)(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.Conv2D(64, 1, use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(10, activation="softmax")(x)
    return tf.keras.Model(inp, out)


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


# One model per distinct builder path: MeliusNetA (channel shuffle and grouped transitions),
# BinaryDenseNet28 (dense blocks only) and MeliusNetTiny (Dense + Improvement blocks, as in
# MeliusNet22/29/42/59, with its own widths and "same" transition pools). The other variants
# differ from these only in the numbers of their row in melius_larq.models.VARIANTS; make test
# runs per-model tests on these three, make test-all (CI) on every model.
REPRESENTATIVE_MODELS = ("MeliusNetA", "BinaryDenseNet28", "MeliusNetTiny")


def registry_params(names):
    """``names`` as pytest parameters; models outside :data:`REPRESENTATIVE_MODELS` are
    marked large (make test-all only)."""
    return [
        n if n in REPRESENTATIVE_MODELS else pytest.param(n, marks=pytest.mark.large) for n in names
    ]


_CONVERSIONS: dict = {}


def convert_cached(model, **kwargs) -> bytes:
    """``convert_model(model, **kwargs)``, converted once per test run for a model that the
    tests only read (a :func:`small_model`, a module fixture).

    Within a worker the key is the model's identity and a fingerprint of its weights, so a
    changed model converts again. Across the workers of one run the flatbuffer is shared on
    disk under a digest of the model's config, weights and the conversion options: the seeded
    :func:`small_model` draws the same weights in every worker, so the other worker reads it.
    """
    from melius_larq.deploy import convert_model

    key = (id(model), _fingerprint(model), tuple(sorted(kwargs.items())))
    if key not in _CONVERSIONS:
        path = _shared_conversion_path(model, kwargs)
        if path is not None and path.exists():
            buf = path.read_bytes()
        else:
            buf = convert_model(model, **kwargs)
            if path is not None:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(buf)
                os.replace(tmp, path)  # atomic: a reader never sees a partial file
        _CONVERSIONS[key] = (model, buf)  # model kept: its id stays unique
    return _CONVERSIONS[key][1]


def _shared_conversion_path(model, kwargs) -> Path | None:
    """Where the workers of this xdist run share the flatbuffer of ``model`` (None outside
    xdist): a digest of the model's config, every weight's bytes and the options."""
    import hashlib
    import json

    if _RUN_TEMP[0] is None:
        return None
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=repr).encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(repr(sorted(kwargs.items())).encode())
    directory = _RUN_TEMP[0] / "shared_conversions"
    directory.mkdir(exist_ok=True)
    return directory / f"{digest.hexdigest()}.tflite"


_RUN_TEMP: list = [None]  # this xdist run's temporary directory, shared by its workers


@pytest.fixture(autouse=True, scope="session")
def _run_temp(tmp_path_factory):
    """Under xdist, each worker's temporary root is ``<run's root>/popen-gw<n>``: the parent
    is the run's own directory (pytest keeps the last three runs' and removes older ones)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _RUN_TEMP[0] = tmp_path_factory.getbasetemp().parent
    yield


# The training plumbing (resume, NaN stop, validation split, sweeps, image folders, mixed
# precision) runs the same code for any registered model: its tests train this micro network,
# which traces and trains in a fraction of MeliusNetTiny's time. It is registered only in the
# test processes.
MICRO_MODEL = "TestMicroBNN"


def micro_bnn(*, input_shape, num_classes, stem=None, preset=None, binarization="ste",
              bnn_plus=None, classifier_activation="softmax", name=None):  # fmt: skip
    """A float conv, one binary 3x3 conv (STE, or BNN+ with its options) and a classifier."""
    import larq as lq

    from melius_larq.bnnplus.config import resolve_binarization

    config = resolve_binarization(binarization, bnn_plus)
    if config is None:
        binconv = lq.layers.QuantConv2D(
            16, 3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="ste_sign",
            kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name="binconv",
        )  # fmt: skip
    else:
        binconv = config.conv2d(16, 3, padding="same", pad_values=1.0, use_bias=False,
                                name="binconv")  # fmt: skip
    inputs = tf.keras.Input(input_shape)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False,
                               name="stem_conv")(inputs)  # fmt: skip
    x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
    x = tf.keras.layers.BatchNormalization(name="binconv_bn")(binconv(x))
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = tf.keras.layers.Dense(num_classes, name="head_dense")(x)
    if classifier_activation is not None:
        x = tf.keras.layers.Activation(classifier_activation, dtype="float32",
                                       name="head_softmax")(x)  # fmt: skip
    return tf.keras.Model(inputs, x, name=name or MICRO_MODEL.lower())


def pytest_configure(config):
    from melius_larq.registry import list_models, register_model

    dist = config.getoption("dist", default="no")
    if dist == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        # pytest-xdist 3.8 groups by a node-id suffix that pytest 9 no longer reads
        pytest.exit(
            f"--dist loadgroup does not group tests under pytest {pytest.__version__}: install "
            "the pytest and pytest-xdist of requirements-test.txt (make setup)",
            returncode=3,
        )

    if MICRO_MODEL not in list_models(family="experiment"):
        register_model(MICRO_MODEL, micro_bnn, family="experiment")


def micro_recipe(**changes):
    """The Fashion-MNIST recipe of MeliusNetTiny with :data:`MICRO_MODEL` as its model and
    ``changes`` applied."""
    from melius_larq.zoo.recipes import apply_overrides, get_recipe

    base = get_recipe("meliusnettiny_fashion_mnist")
    return apply_overrides(base, {"model": MICRO_MODEL, **changes})


def publish_locally(model, path, *, include_top: bool, monkeypatch, cache) -> None:
    """Makes ``model``'s weights, saved to ``path``, the published MeliusNet22 file
    (larq_zoo preset) for this test: ``weights="imagenet"`` then loads them from ``path``
    into the cache directory ``cache``, with the sha256 check, and nothing downloads."""
    import hashlib

    from melius_larq import weights as weights_lib

    model.save_weights(path)
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    cfg = weights_lib.PretrainedCfg(
        "MeliusNet22", "larq_zoo", include_top, Path(path).as_uri(), sha
    )
    monkeypatch.setattr(weights_lib, "PRETRAINED", (cfg,))
    monkeypatch.setenv("MELIUS_LARQ_CACHE", str(cache))
