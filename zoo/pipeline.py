"""tf.data input pipelines: parallel map, caching where the data fits, prefetch."""

from __future__ import annotations

from melius_larq._compat import tf
from melius_larq.zoo.data import (
    DataError,
    import_tfds,
    load_fashion_mnist,
    preprocess_fashion_mnist,
    split_sizes,
)
from melius_larq.zoo.folder import folder_dataset, is_image_folder, scan_image_folder

__all__ = [
    "DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SHAPES", "SPLITS", "make_dataset",
    "num_classes", "split_sizes",
]  # fmt: skip
SPLITS = ("train", "validation", "test")

DATASETS = {"fashion_mnist": 10, "cifar10": 10, "imagenet2012": 1000}
# The authors' ImageNet normalisation on RGB 0-255 (datasets/imagenet.py).
IMAGENET_MEAN = (123.68, 116.779, 103.939)
IMAGENET_STD = (58.393, 57.12, 57.375)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
AUTOTUNE = tf.data.AUTOTUNE
AUGMENTATIONS = ("none", "flip_crop", "imagenet")
FOLDER_CACHE_BYTES = 4 * 2**30


# Image size and channels of each dataset's images as the recipes feed them.
IMAGE_SHAPES = {"fashion_mnist": (28, 1), "cifar10": (32, 3), "imagenet2012": (224, 3)}


def num_classes(dataset: str, data_dir=None) -> int:
    """Classes of a named dataset, or of the image folder ``data_dir`` when it is one."""
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}.")
    if is_image_folder(data_dir):
        return len(scan_image_folder(data_dir, check_images=False).classes)
    return DATASETS[dataset]


def _flip_crop(pad: int):
    def augment(x, y):
        shape = tf.shape(x)
        x = tf.image.random_flip_left_right(x)
        x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        x = tf.image.random_crop(x, shape)
        return x, y

    return augment


def _fashion_mnist(split, data_dir, limit, validation_fraction):
    images, labels = load_fashion_mnist("test" if split == "test" else "train", data_dir)
    if split != "test":
        n_train, _ = split_sizes(len(labels), validation_fraction)
        part = slice(0, n_train) if split == "train" else slice(n_train, None)
        images, labels = images[part], labels[part]
    if limit:
        images, labels = images[:limit], labels[:limit]
    return tf.data.Dataset.from_tensor_slices((preprocess_fashion_mnist(images), labels)), len(
        labels
    )


def _tfds(name, split, data_dir, validation_fraction, test_split="test", **kwargs):
    """A TFDS dataset split: the training part, the held-out validation slice (the last
    ``validation_fraction`` of ``train``) or the test split, and its size."""
    tfds = import_tfds(name)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare(**kwargs)
        if split == "test":
            name_, size = test_split, builder.info.splits[test_split].num_examples
        else:
            n_train, held_out = split_sizes(
                builder.info.splits["train"].num_examples, validation_fraction
            )
            name_, size = (
                (f"train[:{n_train}]", n_train)
                if split == "train"
                else (f"train[{n_train}:]", held_out)
            )
        return builder.as_dataset(split=name_, as_supervised=True), size
    except DataError:
        raise
    except Exception as err:  # TFDS raises many kinds for missing data
        raise DataError(
            f"{name} is not available through tensorflow-datasets ({err}). CIFAR-10 downloads "
            "when online; ImageNet needs the manual download (see tfds imagenet2012) and "
            "--data-dir."
        ) from err


def _imagenet_train(x, y):
    shape = tf.shape(x)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4]), area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
        min_object_covered=0.0, use_image_if_no_bounding_boxes=True,
    )  # fmt: skip
    x = tf.image.resize(tf.slice(x, begin, size), (224, 224))
    x = tf.image.random_flip_left_right(x)
    return (x - IMAGENET_MEAN) / IMAGENET_STD, y


def _imagenet_eval(x, y):
    shape = tf.cast(tf.shape(x)[:2], tf.float32)
    scale = 256.0 / tf.reduce_min(shape)
    x = tf.image.resize(x, tf.cast(tf.round(shape * scale), tf.int32))
    x = tf.image.resize_with_crop_or_pad(x, 224, 224)
    return (x - IMAGENET_MEAN) / IMAGENET_STD, y


def make_dataset(
    dataset: str,
    split: str,
    *,
    batch_size: int,
    augment: str = "none",
    data_dir: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    cache: bool = True,
    validation_fraction: float = 0.1,
    image_size: int | None = None,
    channels: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """A batched, prefetched dataset of preprocessed ``(images, labels)`` and its size.

    The training images are split once, deterministically: ``train`` is the first
    ``1 - validation_fraction`` of them and ``validation`` the rest (Fashion-MNIST with the
    default 0.1: 54,000 and 6,000), so that choices are made on ``validation`` and ``test``
    is touched once per final configuration.

    Args:
        dataset: ``fashion_mnist``, ``cifar10`` or ``imagenet2012``.
        split: ``train``, ``validation`` (held out from the training images) or ``test``
            (ImageNet: its official ``validation`` split).
        batch_size: batch size.
        augment: ``none``, ``flip_crop`` or ``imagenet`` (training only).
        data_dir: where the data is.
        limit: take only the first ``limit`` examples.
        seed: shuffling and augmentation seed.
        cache: cache decoded images in memory (small datasets).
        validation_fraction: the held-out share of the training images, in [0, 0.5].
        image_size, channels: the model's input size and channels, for an image folder
            (``data_dir`` with one sub-folder per class, ``zoo.folder``); None = the
            dataset's own (Fashion-MNIST 28 and 1, CIFAR-10 32 and 3, ImageNet 224 and 3).
    """
    num_classes(dataset)
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of: {', '.join(SPLITS)}.")
    split_sizes(1000, validation_fraction)  # range check before any data is read
    if split == "validation" and not validation_fraction:
        raise DataError("There is no validation split with validation_fraction=0.")
    if augment not in AUGMENTATIONS:
        raise DataError(f"Unknown augmentation {augment!r}; expected one of: {AUGMENTATIONS}.")
    folder = is_image_folder(data_dir)
    if folder:
        found = scan_image_folder(data_dir, validation_fraction, check_images=split == "train")
        paths, labels = found.split(split)
        paths, labels = paths[:limit], labels[:limit]
        size0, channels0 = IMAGE_SHAPES[dataset]
        image_size, channels = image_size or size0, channels or channels0
        ds = folder_dataset(paths, labels, image_size=image_size, channels=channels)
        size = len(labels)
        # decoded images are cached in memory while they take less than FOLDER_CACHE_BYTES
        cache = cache and size * image_size**2 * channels * 4 < FOLDER_CACHE_BYTES
    elif dataset == "fashion_mnist":
        ds, size = _fashion_mnist(split, data_dir, limit, validation_fraction)
    elif dataset == "cifar10":
        ds, size = _tfds("cifar10", split, data_dir, validation_fraction)
        ds = ds.map(lambda x, y: ((tf.cast(x, tf.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD, y),
                    num_parallel_calls=AUTOTUNE)  # fmt: skip
    else:
        ds, size = _tfds("imagenet2012", split, data_dir, validation_fraction, "validation",
                         download_config=None)  # fmt: skip
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
        cache = False  # does not fit in memory
    if limit and dataset != "fashion_mnist" and not folder:
        ds, size = ds.take(limit), min(size, limit)
    if cache:
        ds = ds.cache()
    training = split == "train"
    if training:
        ds = ds.shuffle(min(size, 20_000), seed=seed, reshuffle_each_iteration=True)
        if folder and augment != "none":
            # flip + crop after a reflected border of 1/14 of the size (2 px at 28)
            ds = ds.map(_flip_crop(max(1, round(image_size / 14))), num_parallel_calls=AUTOTUNE)
        elif augment == "flip_crop":
            ds = ds.map(
                _flip_crop(2 if dataset == "fashion_mnist" else 4), num_parallel_calls=AUTOTUNE
            )
        elif augment == "imagenet":
            ds = ds.map(_imagenet_train, num_parallel_calls=AUTOTUNE)
    elif dataset == "imagenet2012" and not folder:
        ds = ds.map(_imagenet_eval, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE), size
