"""Your own images: a folder with one sub-folder of images per class.

Two layouts are read:

- ``PATH/<class>/<image>``: every image is a training image; the validation split is the last
  ``validation_fraction`` of a fixed permutation (seed 0, independent of the training seed) of
  the sorted file list, and there is no test split.
- ``PATH/train/<class>/<image>`` with optional ``PATH/validation/`` (or ``PATH/val/``) and
  ``PATH/test/`` of the same layout: the given splits; without a validation folder it is held
  out of ``train`` as above.

Classes are the sub-folder names in sorted order (label 0 is the first). Images (PNG, JPEG,
BMP, GIF) are decoded to the model's channels (1 = grayscale, 3 = RGB), resized to the input
size (bilinear, aspect ratio not kept) and normalised: grayscale with the Fashion-MNIST
statistics of ``zoo.data``, RGB with the ImageNet mean and standard deviation on 0-255 values.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from melius_larq.zoo.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, DataError, split_sizes

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFolder", "image_folder", "is_image_folder", "scan_image_folder",
]  # fmt: skip

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# The authors' ImageNet normalisation on RGB 0-255 (also zoo.pipeline.IMAGENET_MEAN/STD).
_RGB_MEAN = (123.68, 116.779, 103.939)
_RGB_STD = (58.393, 57.12, 57.375)
_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The files and labels of an image folder's splits.

    Attributes:
        root: the folder.
        classes: class names, label ``i`` is ``classes[i]``.
        train, validation, test: ``(paths, labels)`` per split; ``test`` is None when the
            folder has no test split, ``validation`` is empty with ``validation_fraction=0``.
    """

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[str, ...], np.ndarray]
    validation: tuple[tuple[str, ...], np.ndarray]
    test: tuple[tuple[str, ...], np.ndarray] | None

    def split(self, name: str):
        if name == "test" and self.test is None:
            raise DataError(
                f"{str(self.root)!r} has no test split: add PATH/test/<class>/ next to "
                "PATH/train/<class>/ to report test accuracy."
            )
        return getattr(self, name)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _class_dirs(path: Path) -> list[Path]:
    return sorted((d for d in path.iterdir() if d.is_dir()), key=lambda d: d.name)


def is_image_folder(path) -> bool:
    """True when ``path`` is a directory with class sub-folders that hold images (either
    layout) and no Fashion-MNIST IDX files, so that it is read as an image folder rather than
    as a dataset's files."""
    if path is None or not Path(path).is_dir():
        return False
    root = Path(path)
    if any("-ubyte" in f.name for f in root.iterdir() if f.is_file()):
        return False
    if (root / "train").is_dir():
        root = root / "train"
    return any(any(_is_image(f) for f in d.iterdir()) for d in _class_dirs(root))


def _read_classes(path: Path) -> dict[str, list[str]]:
    classes = {}
    for d in _class_dirs(path):
        files = sorted(str(f) for f in d.iterdir() if _is_image(f))
        if files:
            classes[d.name] = files
    return classes


def _check_readable(paths) -> None:
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            raise DataError(f"Cannot read image {path!r}: {err}") from err


def _flatten(classes: dict[str, list[str]], names: list[str]):
    paths, labels = [], []
    for label, name in enumerate(names):
        paths += classes.get(name, [])
        labels += [label] * len(classes.get(name, []))
    return tuple(paths), np.asarray(labels, np.int64)


def scan_image_folder(path, validation_fraction: float = 0.1, *, check_images: bool = True):
    """Lists an image folder's classes and splits (see the module docstring).

    Args:
        path: the folder.
        validation_fraction: share of the training images held out when the folder has no
            validation split.
        check_images: open every image header once, so that an unreadable file is named
            before training starts.

    Returns:
        An :class:`ImageFolder`.

    Raises:
        DataError: for a missing or empty folder, fewer than two classes, splits with other
            classes than ``train``, or an unreadable image (named).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"--data-dir {str(path)!r} is not a directory.")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = _read_classes(train_dir)
    if not classes:
        raise DataError(
            f"{str(train_dir)!r} holds no images: expected one sub-folder per class with "
            f"{', '.join(IMAGE_EXTENSIONS)} files."
        )
    if len(classes) < 2:
        raise DataError(
            f"{str(train_dir)!r} has one class ({next(iter(classes))!r}); classification "
            "needs at least two class sub-folders."
        )
    names = sorted(classes)
    splits = {}
    for split, candidates in (("validation", ("validation", "val")), ("test", ("test",))):
        found = next((root / c for c in candidates if (root / c).is_dir()), None)
        if found is None or train_dir == root:
            continue
        other = _read_classes(found)
        unknown = sorted(set(other) - set(names))
        if unknown:
            raise DataError(f"{str(found)!r} has classes that {str(train_dir)!r} lacks: {unknown}.")
        splits[split] = _flatten(other, names)
    paths, labels = _flatten(classes, names)
    if "validation" in splits:
        train = (paths, labels)
    else:
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(paths))
        n_train, _ = split_sizes(len(paths), validation_fraction)
        pick = [order[:n_train], order[n_train:]]
        train, held_out = ((tuple(paths[i] for i in p), labels[p]) for p in pick)
        splits["validation"] = held_out
    if check_images:
        _check_readable([*train[0], *splits["validation"][0], *splits.get("test", ((),))[0]])
    return ImageFolder(root, tuple(names), train, splits["validation"], splits.get("test"))


def folder_dataset(paths, labels, *, image_size: int, channels: int):
    """An unbatched ``tf.data`` dataset of decoded, resized, normalised images and labels."""
    from melius_larq._compat import tf

    if channels not in (1, 3):
        raise DataError(f"Image folders feed 1- or 3-channel models, not {channels} channels.")
    mean, std = ((FASHION_MNIST_MEAN * 255,), (FASHION_MNIST_STD * 255,))
    if channels == 3:
        mean, std = _RGB_MEAN, _RGB_STD

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                   expand_animations=False)  # fmt: skip
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
        image.set_shape((image_size, image_size, channels))
        return (image - mean) / std, label

    ds = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def image_folder(path, *, input_shape=(28, 28, 1), split: str = "train", batch_size: int = 32,
                 augment: bool = False, validation_fraction: float = 0.1, seed: int = 0):  # fmt: skip
    """A folder of your own images as a batched ``tf.data.Dataset`` for ``model.fit``.

    The reader of ``melius-larq train --data-dir FOLDER`` (layouts, splits and preprocessing
    in the module docstring): the training split is shuffled (and, with ``augment``, flipped
    and randomly cropped after a reflected border of 1/14 of the size), the batches of the
    training split drop their remainder, the others keep it.

    Args:
        path: the folder (``PATH/<class>/`` or ``PATH/train/<class>/`` with optional
            ``validation/`` and ``test/``).
        input_shape: ``(size, size, channels)`` of the model: images are resized to it and
            decoded to 1 (grayscale) or 3 (RGB) channels.
        split: ``train``, ``validation`` or ``test``.
        batch_size: batch size.
        augment: random flips and crops (training split only).
        validation_fraction: share of the training images held out as ``validation`` when
            the folder has no validation split.
        seed: shuffling and augmentation seed.

    Returns:
        ``(dataset, class_names)``: batches of ``(images, labels)``; label ``i`` is
        ``class_names[i]``.

    Raises:
        DataError: for a folder that is not an image folder, an unreadable image, a split the
            folder lacks, or an input shape that is not square with 1 or 3 channels.

    Example:
        >>> ds, classes = image_folder("my_images", input_shape=(28, 28, 1))  # doctest: +SKIP
        >>> model.fit(ds, epochs=5)  # doctest: +SKIP
    """
    from melius_larq.zoo.pipeline import make_dataset

    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] not in (1, 3):
        raise DataError(
            f"input_shape={input_shape!r}: expected (size, size, channels) with equal sizes "
            "and 1 or 3 channels."
        )
    found = scan_image_folder(path, validation_fraction, check_images=split == "train")
    if not is_image_folder(path):  # e.g. Fashion-MNIST IDX files next to the class folders
        raise DataError(f"{str(path)!r} holds dataset files, not only class sub-folders.")
    ds, _ = make_dataset("fashion_mnist" if shape[2] == 1 else "cifar10", split,
                         batch_size=batch_size, augment="flip_crop" if augment else "none",
                         data_dir=str(path), seed=seed, validation_fraction=validation_fraction,
                         image_size=shape[0], channels=shape[2])  # fmt: skip
    return ds, list(found.classes)


def folder_images(path, *, image_size: int, channels: int, split: str = "train",
                  limit: int | None = None, validation_fraction: float = 0.1):  # fmt: skip
    """Preprocessed images and labels of one split of an image folder as numpy arrays (for
    evaluation, verification and int8 calibration)."""
    folder = scan_image_folder(path, validation_fraction)
    paths, labels = folder.split(split)
    paths, labels = paths[:limit], labels[:limit]
    ds = folder_dataset(paths, labels, image_size=image_size, channels=channels).batch(256)
    images = [x.numpy() for x, _ in ds]
    return np.concatenate(images), labels


def describe(folder: ImageFolder) -> str:
    test = len(folder.test[0]) if folder.test is not None else "none"
    return (
        f"{os.fspath(folder.root)}: {len(folder.classes)} classes, {len(folder.train[0])} "
        f"training / {len(folder.validation[0])} validation / {test} test images"
    )
