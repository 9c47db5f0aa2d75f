"""Datasets: Fashion-MNIST from IDX files (offline), CIFAR-10 and ImageNet via TFDS.

Fashion-MNIST is read from, in order: ``data_dir`` given by the user, ``$MELIUS_LARQ_DATA``,
and the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
When none has the files, tensorflow-datasets' ``fashion_mnist`` is tried (it downloads when
online).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from melius_larq._optional import import_optional

__all__ = [
    "INPUT_DATASETS",
    "DEBIAN_FASHION_MNIST",
    "DataError",
    "fashion_mnist_files",
    "import_tfds",
    "load_fashion_mnist",
    "read_idx",
    "split_sizes",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes; the only one Fashion-MNIST uses
HOW_TO_GET = (
    "Install the Debian package (sudo apt-get install dataset-fashion-mnist), pass "
    "--data-dir pointing at the four IDX files (train/t10k images/labels, .gz or not), or "
    "let tensorflow-datasets (pip install 'melius_larq[datasets]') download 'fashion_mnist' "
    "on a machine that is online."
)


# Datasets whose preprocessed test images ``dataset_inputs`` returns (verification, calibration).
INPUT_DATASETS = ("fashion_mnist", "cifar10")


class DataError(ValueError):
    """A dataset is missing, corrupt or truncated."""


def import_tfds(purpose: str):
    """The ``tensorflow_datasets`` module, an optional dependency.

    Raises:
        DataError: naming ``pip install 'melius_larq[datasets]'`` when it is not installed.
    """
    try:
        return import_optional("tensorflow_datasets", purpose)
    except ImportError as err:
        raise DataError(str(err)) from err


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) of unsigned bytes into an ndarray.

    Raises:
        DataError: naming the file when its header is not IDX or its data is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises EOFError on a truncated stream
        raise DataError(
            f"Cannot read {str(path)!r}: {err}. The file is corrupt or truncated."
        ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number {raw[:4]!r}).")
    if raw[2] != _IDX_UBYTE:
        raise DataError(f"{str(path)!r}: IDX type 0x{raw[2]:02x} is not unsigned bytes (0x08).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{str(path)!r} is truncated inside its header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{str(path)!r} is truncated or corrupt: its header announces shape {shape} "
            f"({expected} bytes of data) but it holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def split_sizes(total: int, validation_fraction: float) -> tuple[int, int]:
    """(training, validation) sizes of a training set whose last ``validation_fraction`` is
    held out for validation (at least one image when the fraction is above 0).

    Raises:
        DataError: for a fraction outside [0, 0.5] or a split that leaves a part empty.
    """
    if not 0.0 <= validation_fraction <= 0.5:
        raise DataError(
            f"validation_fraction={validation_fraction!r} is outside [0, 0.5] (the held-out "
            "share of the training images)."
        )
    held_out = max(1, int(round(total * validation_fraction))) if validation_fraction else 0
    if validation_fraction and not 0 < held_out < total:
        raise DataError(
            f"validation_fraction={validation_fraction} of {total} training images leaves an "
            "empty training or validation set."
        )
    return total - held_out, held_out


def _find(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist_files(split: str, data_dir: str | os.PathLike | None = None):
    """The (images, labels) IDX paths of a split, or None when no directory has them."""
    if split not in _FILES:
        raise DataError(f"Unknown split {split!r}; expected 'train' or 'test'.")
    candidates = [Path(d) for d in (data_dir, os.environ.get("MELIUS_LARQ_DATA")) if d]
    candidates.append(DEBIAN_FASHION_MNIST)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {str(data_dir)!r} is not a directory. {HOW_TO_GET}")
    for directory in candidates:
        paths = [_find(directory, stem) for stem in _FILES[split]]
        if all(paths):
            return tuple(paths)
        if data_dir is not None and directory == Path(data_dir):
            raise DataError(
                f"{str(directory)!r} does not hold the Fashion-MNIST {split} files "
                f"{' and '.join(_FILES[split])} (.gz or not), nor images in one sub-folder per "
                f"class. {HOW_TO_GET}"
            )
    return None


def _from_tfds(split: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(f"Fashion-MNIST not found. {HOW_TO_GET}") from err
    try:
        ds = tfds.load("fashion_mnist", split=split, batch_size=-1, as_supervised=True)
    except Exception as err:  # TFDS raises many kinds when offline
        raise DataError(
            f"Fashion-MNIST not found locally and TFDS failed ({err}). {HOW_TO_GET}"
        ) from err
    images, labels = tfds.as_numpy(ds)
    return images[..., 0].astype(np.uint8), labels.astype(np.int64)


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None):
    """Fashion-MNIST as numpy arrays.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        data_dir: directory with the IDX files; see the module docstring for the search order.

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28]`` and int64 ``[N]``.

    Raises:
        DataError: when the data is missing (saying how to get it), corrupt or truncated.
    """
    paths = fashion_mnist_files(split, data_dir)
    if paths is None:
        return _from_tfds(split)
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}."
        )
    return images, labels.astype(np.int64)


# Fashion-MNIST pixel statistics of the training split (x / 255), used to normalise inputs.
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


def preprocess_fashion_mnist(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` images to normalised float32 ``[N, 28, 28, 1]``."""
    x = images.astype(np.float32) / 255.0
    return ((x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)[..., None]


def dataset_inputs(
    name: str,
    input_shape,
    *,
    limit: int | None = None,
    data_dir=None,
    with_labels: bool = False,
    split: str = "test",
):
    """Preprocessed images of a dataset split (``test`` for verification, ``train`` for
    calibration).

    The images are preprocessed as the training pipeline does (``zoo.pipeline``), so that a
    model sees the inputs it was trained on.

    Returns:
        The images, or ``(images, labels)`` with ``with_labels=True``.

    Raises:
        DataError: for an unknown dataset, or when the model's input shape does not fit it.
    """
    if name == "fashion_mnist":
        images, labels = load_fashion_mnist(split, data_dir)
        x = preprocess_fashion_mnist(images[:limit])
    elif name == "cifar10":
        from melius_larq.zoo.pipeline import CIFAR_MEAN, CIFAR_STD

        tfds = import_tfds("CIFAR-10")
        try:
            ds = tfds.load(
                "cifar10", split=split, batch_size=-1, as_supervised=True, data_dir=data_dir
            )
        except Exception as err:
            raise DataError(
                f"CIFAR-10 is not available through tensorflow-datasets: {err}"
            ) from err
        images, labels = tfds.as_numpy(ds)
        x = ((images[:limit].astype(np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD).astype(
            np.float32
        )
    else:
        raise DataError(f"Unknown dataset {name!r}; expected one of: {', '.join(INPUT_DATASETS)}.")
    if tuple(input_shape) != x.shape[1:]:
        raise DataError(
            f"The model expects inputs of shape {tuple(input_shape)}, but {name} images have "
            f"shape {x.shape[1:]}."
        )
    return (x, np.asarray(labels[:limit])) if with_labels else x
