"""The ``.cbd`` file: packed sign planes, dense planes and GF(2) factors of compressed kernels.

Layout (little-endian)::

    offset  size  field
    0       8     magic b"\\x89CBD\\r\\n\\x1a\\n"
    8       2     format version (1)
    10      2     reserved (0)
    12      4     metadata length M
    16      8     payload length P
    24      32    SHA-256 of metadata + payload
    56      M     metadata: UTF-8 JSON (per layer: name, kernel shape, J, m, a, plane storage,
                  ranks, payload offset and bit count)
    56 + M  P     payload: one bit stream per layer, padded to a byte

A layer's bit stream is its sign plane (``h w`` bits, row-major, 1 = negative), then each plane
from ``a_s`` down to ``a_i``: ``h w`` bits if dense, or ``U`` (``h r``) then ``V`` (``r w``) if
factored. Its length is exactly the bit count of the report, so the payload is
``sum ceil(bits / 8)`` bytes and the file exceeds the accounted bits only by the header, the
metadata and at most 7 padding bits per layer. ``m`` and ``a`` are stored as JSON floats, which
round-trip float64 exactly, so loading rebuilds the same codes and bit-identical float32
kernels.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019, for the planes and factors stored here; the file format is
      this package's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from melius_larq._compat import tf
from melius_larq._io import write_atomic
from melius_larq.cbd.compress import CompressionReport, replace_kernels
from melius_larq.cbd.decompose import MAX_BITS, LayerCBD, Plane, grid
from melius_larq.cbd.gf2 import gf2_matmul

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CBDFile",
    "apply_cbd",
    "load_cbd",
    "save_cbd",
]

MAGIC = b"\x89CBD\r\n\x1a\n"  # PNG-style: non-ASCII first byte, CRLF and ^Z catch text mangling
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHIQ32s")
HEADER_BYTES = _HEADER.size  # 56


def _layer_bits(layer: LayerCBD) -> np.ndarray:
    parts = [layer.negative.reshape(-1)]
    for p in layer.planes:
        if p.factored:
            left, right = p.factors
            parts += [left.reshape(-1), right.reshape(-1)]
        else:
            parts.append(layer.plane(p.exponent).reshape(-1))
    return np.concatenate([np.asarray(x, dtype=np.uint8) for x in parts])


def _layers_of(source) -> list[LayerCBD]:
    if isinstance(source, CompressionReport):
        layers = list(source.decompositions.values())
    elif isinstance(source, Mapping):
        layers = list(source.values())
    else:
        layers = list(source)
    for layer in layers:
        if not isinstance(layer, LayerCBD):
            raise ValueError(
                "A .cbd file stores CBD decompositions, but got a "
                f"{type(layer).__name__} for layer {getattr(layer, 'name', '?')!r} (a "
                "method='plain' report has no planes to store)."
            )
    return layers


def save_cbd(
    path: str | os.PathLike,
    source: CompressionReport | Mapping[str, LayerCBD] | Iterable[LayerCBD],
) -> Path:
    """Writes compressed kernels to one ``.cbd`` file (atomically).

    Args:
        path: destination file.
        source: a ``compress_model`` report, or the :class:`LayerCBD` objects themselves.

    Returns:
        The path written.

    Raises:
        ValueError: for nothing to save or layers that are not CBD decompositions (a
            ``method="plain"`` report).
    """
    layers = _layers_of(source)
    if not layers:
        raise ValueError("Nothing to save: expected at least one compressed layer.")
    entries, chunks, offset = [], [], 0
    for layer in layers:
        bits = _layer_bits(layer)
        if bits.size != layer.payload_bits():  # the accounting and the format must agree
            raise AssertionError(f"{layer.name}: {bits.size} bits vs {layer.payload_bits()}")
        packed = np.packbits(bits, bitorder="big").tobytes()
        entries.append(
            {
                "name": layer.name,
                "kernel_shape": [int(d) for d in layer.kernel_shape],
                "matrix_shape": [int(d) for d in layer.shape],
                "bits": layer.bits,
                "m": layer.m,
                "a": layer.a,
                "fallback": layer.fallback,
                "planes": [
                    {"exponent": p.exponent, "rank": p.rank, "factored": p.factored}
                    for p in layer.planes
                ],
                "offset": offset,
                "nbits": int(bits.size),
            }
        )
        chunks.append(packed)
        offset += len(packed)
    meta = json.dumps({"format": "melius_larq.cbd", "layers": entries}, separators=(",", ":"))
    meta_bytes = meta.encode("utf-8")
    payload = b"".join(chunks)
    digest = hashlib.sha256(meta_bytes + payload).digest()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta_bytes), len(payload), digest)
    return write_atomic(header + meta_bytes + payload, path)


@dataclasses.dataclass(frozen=True)
class CBDFile:
    """A loaded ``.cbd`` file.

    Attributes:
        layers: ``{layer path: LayerCBD}`` rebuilt from the stored planes and factors.
        metadata_bytes: size of the JSON metadata; ``payload_bytes`` of the bit streams.
    """

    layers: dict[str, LayerCBD]
    metadata_bytes: int
    payload_bytes: int

    def kernels(self) -> dict[str, np.ndarray]:
        """``{layer path: float32 kernel}`` in the Keras layout."""
        return {name: layer.kernel() for name, layer in self.layers.items()}


def _corrupt(where: str, detail: str) -> ValueError:
    return ValueError(f"{where} is not a valid CBD file: {detail}.")


def _check_entry(where: str, e: dict, payload_bytes: int) -> None:
    try:
        h, w = e["matrix_shape"]
        bits = e["bits"]
        expected = h * w
        for p in e["planes"]:
            expected += p["rank"] * (h + w) if p["factored"] else h * w
        valid_scale = isinstance(bits, int) and 1 <= bits <= MAX_BITS and 2.0**-bits < e["a"] <= 1
        exponents = []
        if valid_scale:
            g = grid(e["a"], bits)
            exponents = list(range(g["a_s"], g["a_i"] - 1, -1))
        ok = (
            valid_scale
            and [p["exponent"] for p in e["planes"]] == exponents
            and int(np.prod(e["kernel_shape"])) == h * w
            and e["m"] >= 0
            and e["nbits"] == expected
            and 0 <= e["offset"]
            and e["offset"] + -(-e["nbits"] // 8) <= payload_bytes
        )
    except (KeyError, TypeError, ValueError) as err:
        raise _corrupt(where, f"malformed layer entry ({err!r})") from err
    if not ok:
        raise _corrupt(where, f"inconsistent layer entry for {e.get('name')!r}")


def _decode_layer(entry: dict, payload: bytes) -> LayerCBD:
    h, w = entry["matrix_shape"]
    n = h * w
    start = entry["offset"]
    stream = np.frombuffer(payload, dtype=np.uint8, count=-(-entry["nbits"] // 8), offset=start)
    bits = np.unpackbits(stream, count=entry["nbits"], bitorder="big")
    negative = bits[:n].reshape(h, w).astype(bool)
    pos = n
    a_i = grid(entry["a"], entry["bits"])["a_i"]
    codes = np.zeros((h, w), dtype=np.uint8)
    planes = []
    for p in entry["planes"]:
        if p["factored"]:
            r = p["rank"]
            left = bits[pos : pos + h * r].reshape(h, r)
            pos += h * r
            right = bits[pos : pos + r * w].reshape(r, w)
            pos += r * w
            plane = gf2_matmul(left, right) if r else np.zeros((h, w), dtype=np.uint8)
            planes.append(Plane(p["exponent"], r, (left, right)))
        else:
            plane = bits[pos : pos + n].reshape(h, w)
            pos += n
            planes.append(Plane(p["exponent"], p["rank"], None))
        codes |= plane.astype(np.uint8) << np.uint8(p["exponent"] - a_i)
    return LayerCBD(
        name=entry["name"],
        kernel_shape=tuple(entry["kernel_shape"]),
        bits=entry["bits"],
        m=float(entry["m"]),
        a=float(entry["a"]),
        negative=negative,
        codes=codes,
        planes=tuple(planes),
        fallback=entry["fallback"],
    )


def load_cbd(path: str | os.PathLike) -> CBDFile:
    """Reads a ``.cbd`` file and rebuilds its layers.

    Raises:
        ValueError: when the file is truncated, has the wrong magic or version, fails its
            checksum, or has inconsistent metadata.
        OSError: when it cannot be read.
    """
    path = Path(path)
    data = path.read_bytes()
    where = repr(str(path))
    if len(data) < HEADER_BYTES:
        raise _corrupt(
            where, f"truncated: {len(data)} bytes, the header alone needs {HEADER_BYTES}"
        )
    magic, version, _, meta_len, payload_len, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _corrupt(where, f"expected the magic bytes {MAGIC!r}, got {magic!r}")
    if version != FORMAT_VERSION:
        raise _corrupt(where, f"unsupported format version {version} (expected {FORMAT_VERSION})")
    expected = HEADER_BYTES + meta_len + payload_len
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing data"
        raise _corrupt(
            where, f"{kind}: the header promises {expected} bytes, the file has {len(data)}"
        )
    body = data[HEADER_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise _corrupt(where, "SHA-256 checksum mismatch (the file is corrupt)")
    try:
        meta = json.loads(body[:meta_len].decode("utf-8"))
        entries = meta["layers"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise _corrupt(where, f"unreadable metadata ({err})") from err
    payload = body[meta_len:]
    layers = {}
    for entry in entries:
        _check_entry(where, entry, payload_len)
        layers[entry["name"]] = _decode_layer(entry, payload)
    return CBDFile(layers, meta_len, payload_len)


def apply_cbd(model: tf.keras.Model, source: str | os.PathLike | CBDFile) -> tf.keras.Model:
    """A clone of ``model`` with the kernels stored in a ``.cbd`` file.

    The file holds only the compressed kernels; the architecture, biases and normalisation
    parameters come from ``model`` (the original or the compressed one). ``model`` is not
    modified.
    """
    loaded = source if isinstance(source, CBDFile) else load_cbd(source)
    return replace_kernels(model, loaded.kernels())
