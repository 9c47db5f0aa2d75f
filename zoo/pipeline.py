"""tf.data input pipelines: parallel map, caching where the data fits, prefetch."""

from __future__ import annotations

from melius_larq._compat import tf
from melius_larq.zoo.data import DataError, load_fashion_mnist, preprocess_fashion_mnist

__all__ = ["DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "make_dataset", "num_classes"]

DATASETS = {"fashion_mnist": 10, "cifar10": 10, "imagenet2012": 1000}
# The authors' ImageNet normalisation on RGB 0-255 (datasets/imagenet.py).
IMAGENET_MEAN = (123.68, 116.779, 103.939)
IMAGENET_STD = (58.393, 57.12, 57.375)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
AUTOTUNE = tf.data.AUTOTUNE


def num_classes(dataset: str) -> int:
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}.")
    return DATASETS[dataset]


def _flip_crop(pad: int):
    def augment(x, y):
        shape = tf.shape(x)
        x = tf.image.random_flip_left_right(x)
        x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        x = tf.image.random_crop(x, shape)
        return x, y

    return augment


def _fashion_mnist(split, data_dir, limit):
    images, labels = load_fashion_mnist("train" if split == "train" else "test", data_dir)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return tf.data.Dataset.from_tensor_slices((preprocess_fashion_mnist(images), labels)), len(
        labels
    )


def _tfds(name, split, data_dir, **kwargs):
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare(**kwargs)
        ds = builder.as_dataset(split=split, as_supervised=True)
        return ds, builder.info.splits[split].num_examples
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
) -> tuple[tf.data.Dataset, int]:
    """A batched, prefetched dataset of preprocessed ``(images, labels)`` and its size.

    Args:
        dataset: ``fashion_mnist``, ``cifar10`` or ``imagenet2012``.
        split: ``train`` or ``test`` (ImageNet: ``validation`` is used for ``test``).
        batch_size: batch size.
        augment: ``none``, ``flip_crop`` or ``imagenet`` (training only).
        data_dir: where the data is.
        limit: take only the first ``limit`` examples.
        seed: shuffling and augmentation seed.
        cache: cache decoded images in memory (small datasets).
    """
    num_classes(dataset)
    if split not in ("train", "test"):
        raise DataError(f"Unknown split {split!r}; expected 'train' or 'test'.")
    if dataset == "fashion_mnist":
        ds, size = _fashion_mnist(split, data_dir, limit)
    elif dataset == "cifar10":
        ds, size = _tfds("cifar10", split, data_dir)
        ds = ds.map(lambda x, y: ((tf.cast(x, tf.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD, y),
                    num_parallel_calls=AUTOTUNE)  # fmt: skip
    else:
        ds, size = _tfds("imagenet2012", "train" if split == "train" else "validation", data_dir,
                         download_config=None)  # fmt: skip
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
        cache = False  # does not fit in memory
    if limit and dataset != "fashion_mnist":
        ds, size = ds.take(limit), min(size, limit)
    if cache:
        ds = ds.cache()
    training = split == "train"
    if training:
        ds = ds.shuffle(min(size, 20_000), seed=seed, reshuffle_each_iteration=True)
        if augment == "flip_crop":
            ds = ds.map(
                _flip_crop(2 if dataset == "fashion_mnist" else 4), num_parallel_calls=AUTOTUNE
            )
        elif augment == "imagenet":
            ds = ds.map(_imagenet_train, num_parallel_calls=AUTOTUNE)
    elif dataset == "imagenet2012":
        ds = ds.map(_imagenet_eval, num_parallel_calls=AUTOTUNE)
    elif augment not in ("none", "flip_crop", "imagenet"):
        raise DataError(f"Unknown augmentation {augment!r}.")
    return ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE), size
