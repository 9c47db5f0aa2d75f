"""Weights: published pretrained files (pinned by sha256) and loading ``.h5`` weight files.

Loading matches layers by name, so a file saved from ``larq_zoo.literature.MeliusNet22``
(which builds grouped convolutions as ``tf.split`` + one ``Conv2D`` per group + ``tf.concat``)
loads into the native grouped convolutions of this package: the per-group kernels are
concatenated along the output-channel axis, which is exactly the layout of a grouped kernel.
Every weight is checked before any is assigned, so a failed load leaves the model untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from melius_larq._compat import tf

__all__ = [
    "PRETRAINED",
    "PretrainedCfg",
    "fetch_pretrained",
    "list_pretrained",
    "load_weights_into",
    "pick_preset",
]


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """A published weights file.

    Attributes:
        model: registry name of the architecture.
        preset: preset whose semantics the weights were trained with.
        include_top: whether the file holds the classifier.
        url: where the file is published.
        sha256: hash the downloaded file must have.
        num_classes: classes of the classifier.
        top1: published ImageNet top-1 (%).
    """

    model: str
    preset: str
    include_top: bool
    url: str
    sha256: str
    num_classes: int = 1000
    top1: float | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_ZOO = "https://github.com/larq/zoo/releases/download/"
PRETRAINED: tuple[PretrainedCfg, ...] = (
    PretrainedCfg(
        "MeliusNet22",
        "larq_zoo",
        True,
        _ZOO + "meliusnet22-v0.1.0/meliusnet22_weights.h5",
        "c1ba85e8389ae326009665ec13331e49fc3df4d0f925fa8553e224f7362c18ed",
        top1=62.4,
    ),
    PretrainedCfg(
        "MeliusNet22",
        "larq_zoo",
        False,
        _ZOO + "meliusnet22-v0.1.1/meliusnet22_weights_notop.h5",
        "abfc5c50049d72a14e44df0c1cb73896ece2a1ab4bf9bb48fede6cc2f5e0b58f",
        top1=62.4,
    ),
)


def list_pretrained() -> list[str]:
    """Models with published ImageNet weights, as ``"name (preset=...)"``."""
    return sorted({f"{c.model} (preset={c.preset!r})" for c in PRETRAINED})


_LOG = logging.getLogger("melius_larq")
PICK = "pick"
DEFAULT_PRESET = "lce"


def pick_preset(model: str, preset, weights, include_top: bool = True):
    """The preset a builder uses: ``preset`` as given, or for ``"pick"`` (the builders'
    default) the preset the published file was trained with when ``weights="imagenet"``
    (said in one log line of the ``melius_larq`` logger) and ``"lce"`` otherwise.

    Raises:
        ValueError: for ``weights="imagenet"`` with an explicit preset other than the one of
            the published file, naming both.
    """
    if weights != "imagenet":
        return DEFAULT_PRESET if preset == PICK else preset
    published = [c.preset for c in PRETRAINED if (c.model, c.include_top) == (model, include_top)]
    if not published:
        return DEFAULT_PRESET if preset == PICK else preset  # get_pretrained_cfg says what exists
    name = getattr(preset, "name", preset)
    if preset == PICK:
        _LOG.info("%s(weights='imagenet'): using preset=%r, the preset the published weights "
                  "were trained with.", model, published[0])  # fmt: skip
        return published[0]
    if name not in published:
        raise ValueError(
            f"weights='imagenet' for {model} were trained with preset={published[0]!r}, but "
            f"preset={name!r} was given: leave preset unset (it then picks {published[0]!r}) "
            "or pass weights=None or the path of a weights file trained with that preset."
        )
    return preset


def get_pretrained_cfg(model: str, preset: str, include_top: bool) -> PretrainedCfg:
    """The published file for a model/preset, or a ValueError saying what exists."""
    for cfg in PRETRAINED:
        if (cfg.model, cfg.preset, cfg.include_top) == (model, preset, include_top):
            return cfg
    raise ValueError(
        f"No published ImageNet weights for {model} with preset={preset!r}; available: "
        f"{', '.join(list_pretrained())}. Pass weights=None or the path of a weights file."
    )


def default_cache_dir() -> Path:
    """``$MELIUS_LARQ_CACHE`` or ``~/.cache/melius_larq``."""
    return Path(os.environ.get("MELIUS_LARQ_CACHE", Path.home() / ".cache" / "melius_larq"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pretrained(
    cfg: PretrainedCfg,
    *,
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
) -> Path:
    """Returns the local path of a published file, downloading it if needed.

    The file is kept as ``<cache_dir>/<model>/<file name>`` and fetched with
    ``tf.keras.utils.get_file``, which checks it against ``cfg.sha256`` (a cached file with
    another hash is downloaded again) and removes a failed download. A downloaded file with
    the wrong hash is deleted and refused, so only a file with the pinned hash is ever used.

    Args:
        cfg: the published file.
        cache_dir: where to keep it; defaults to :func:`default_cache_dir`.
        url: download from here instead of ``cfg.url`` (a mirror, or ``file://`` URL).

    Raises:
        OSError: when the file cannot be downloaded (e.g. offline) or the cache directory
            cannot be written.
        ValueError: when the downloaded file does not have the pinned sha256.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    subdir = cfg.model.lower()
    target = cache / subdir / cfg.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(cache, os.W_OK):  # get_file would fall back to /tmp/.keras
        raise OSError(f"Cannot write the weights cache {str(cache)!r}: permission denied.")
    source = url or cfg.url
    try:
        path = tf.keras.utils.get_file(
            cfg.filename,
            source,
            file_hash=cfg.sha256,
            hash_algorithm="sha256",
            cache_dir=str(cache),
            cache_subdir=subdir,
        )
    except ValueError:  # the download completed but has another hash; get_file keeps it
        if not target.exists():
            raise
        got = _sha256(target)
        target.unlink()
        raise ValueError(
            f"Refusing the downloaded {cfg.filename}: its sha256 is {got}, expected "
            f"{cfg.sha256} (corrupted download or tampered file)."
        ) from None
    except Exception as err:  # get_file raises a bare Exception for URL errors
        raise OSError(
            f"Could not download the {cfg.model} weights from {source} ({err}). If this "
            f"machine is offline, download the file elsewhere, check that its sha256 is "
            f"{cfg.sha256}, and pass its path as `weights=`."
        ) from err
    return Path(path)


def read_h5_weights(path: str | os.PathLike) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Reads a Keras 2 ``.h5`` weights (or full model) file: layer -> [(weight, array)]."""
    path = Path(path)
    _check_weights_file(path)
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        result = {}
        for raw in group.attrs["layer_names"]:
            layer = raw.decode() if isinstance(raw, bytes) else str(raw)
            g = group[layer]
            names = [
                n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["weight_names"]
            ]
            if names:
                result[layer] = [(n, np.asarray(g[n])) for n in names]
        return result


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def _mismatch_message(layer, weight_name, file_shape, model_shape, path) -> str:
    if layer.name == "head_dense":
        return (
            f"The weights in {path!r} have num_classes={file_shape[-1]}, but the model was "
            f"built with num_classes={model_shape[-1]}."
        )
    if layer.name == "stem_s0_conv" and len(file_shape) == 4 and file_shape[2] != model_shape[2]:
        return (
            f"The weights in {path!r} expect {file_shape[2]} input channels, but the model's "
            f"input has {model_shape[2]} channels."
        )
    return (
        f"Layer {layer.name!r} weight {weight_name!r} has shape {tuple(file_shape)} in {path!r} "
        f"but {tuple(model_shape)} in the model: the file was saved from a different "
        "architecture, variant or stem."
    )


def _file_arrays_for(layer, stored):
    """The stored arrays of ``layer``, merging larq_zoo's per-group convs into one kernel."""
    if layer.name in stored:
        return stored[layer.name]
    groups = getattr(layer, "groups", 1)
    parts = [f"{layer.name}_conv{i}" for i in range(groups)]
    if groups > 1 and all(p in stored for p in parts):
        kernels = [stored[p][0][1] for p in parts]
        return [(f"{layer.name}/kernel:0", np.concatenate(kernels, axis=-1))]
    return None


def load_h5_weights(model: tf.keras.Model, path: str | os.PathLike) -> None:
    """Loads an ``.h5`` weights file into ``model`` by layer name, all or nothing.

    Raises:
        ValueError: when the path is not a weights file, a layer is missing from it, or a
            shape does not fit (naming the layer, and num_classes or input channels where
            that is the cause).
    """
    stored = read_h5_weights(path)
    path = str(path)
    assignments = []
    missing = []
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = _file_arrays_for(layer, stored)
        if arrays is None:
            missing.append(layer.name)
            continue
        used.update(k for k in stored if k == layer.name or k.startswith(f"{layer.name}_conv"))
        if len(arrays) != len(layer.weights):
            raise ValueError(
                f"Layer {layer.name!r} has {len(layer.weights)} weights but {path!r} stores "
                f"{len(arrays)} for it."
            )
        values = []
        for variable, (file_name, array) in zip(layer.weights, arrays, strict=True):
            if _short(file_name) != _short(variable.name):
                raise ValueError(
                    f"Layer {layer.name!r}: {path!r} stores {_short(file_name)!r} where the "
                    f"model has {_short(variable.name)!r}."
                )
            if tuple(array.shape) != tuple(variable.shape):
                raise ValueError(
                    _mismatch_message(layer, file_name, array.shape, variable.shape, path)
                )
            values.append(array)
        assignments.append((layer, values))
    if missing:
        raise ValueError(
            f"{path!r} does not hold weights for {len(missing)} layer(s) of {model.name}, "
            f"e.g. {', '.join(missing[:5])}: it was saved from a different model."
        )
    extra = sorted(set(stored) - used - {"head_dense"})
    if extra:
        raise ValueError(
            f"{path!r} holds weights for layers that {model.name} does not have, e.g. "
            f"{', '.join(extra[:5])}: it was saved from a different model or variant."
        )
    for layer, values in assignments:
        layer.set_weights(values)


def check_weights_argument(weights, *, model: str, preset: str, include_top: bool,
                           num_classes: int) -> None:  # fmt: skip
    """Checks the builders' ``weights`` argument before the model is built, so that a wrong
    value fails at once: a published file must exist for ``model``/``preset`` with
    ``num_classes``; a path must be an existing Keras ``.h5`` weights file.

    Raises:
        ValueError: naming the bad value and what was expected.
    """
    if weights is None:
        return
    if weights == "imagenet":
        cfg = get_pretrained_cfg(model, preset, include_top)
        if include_top and num_classes != cfg.num_classes:
            raise ValueError(
                f"weights='imagenet' has num_classes={cfg.num_classes}, but the model was "
                f"built with num_classes={num_classes}."
            )
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"Expected `weights` to be None, 'imagenet' or a file path, but got {weights!r}."
        )
    _check_weights_file(Path(weights))


def _check_weights_file(path: Path) -> None:
    if not path.exists():
        raise ValueError(f"Weights file {str(path)!r} does not exist.")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{str(path)!r} is not a weights file: expected a Keras .h5 (HDF5) weights file "
            "as written by model.save_weights('...h5')."
        )
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise ValueError(f"{str(path)!r} is an HDF5 file but holds no Keras layer weights.")


def load_weights_into(model, weights, *, spec, preset, include_top) -> None:
    """Resolves the builders' ``weights`` argument and loads it into ``model``."""
    if weights == "imagenet":
        cfg = get_pretrained_cfg(spec.name, preset.name, include_top)
        if include_top and model.output_shape[-1] != cfg.num_classes:
            raise ValueError(
                f"weights='imagenet' has num_classes={cfg.num_classes}, but the model was "
                f"built with num_classes={model.output_shape[-1]}."
            )
        weights = fetch_pretrained(cfg)
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"Expected `weights` to be None, 'imagenet' or a file path, but got {weights!r}."
        )
    load_h5_weights(model, weights)
