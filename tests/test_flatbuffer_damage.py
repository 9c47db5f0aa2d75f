"""Damaged TFLite flatbuffers: every loader rejects them with one line, nothing crashes.

One small real flatbuffer (MeliusNetTiny, converted by LCE) is cut short, zero-filled, hit by
random byte flips, given a wrong root offset, and edited through the schema's object API to
name an operator code, tensor or buffer that does not exist. Each damaged file either fails
validation with :class:`FlatbufferError` or is harmless; the CLI verbs that load a
flatbuffer (``report``, ``verify``, ``bench``) then run on every file in one subprocess, so
that a crash of the C++ interpreter (a signal) fails the test instead of killing pytest.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import require

import melius_larq
from melius_larq import _tflite
from melius_larq._tflite import FlatbufferError, load_flatbuffer, pack, read_model

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_flatbuffer_damage")

require("larq_compute_engine")

CUTS = 30  # cut lengths, spread over the file
FLIP_SEEDS = range(12)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """``(directory, flatbuffer bytes, Keras model path)`` of a converted MeliusNetTiny."""
    from melius_larq.deploy import convert_model

    root = tmp_path_factory.mktemp("damage")
    model = melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10)
    keras_path = root / "m.keras"
    model.save(keras_path)
    buf = convert_model(model)
    (root / "original.tflite").write_bytes(buf)
    return root, buf, keras_path


def _edited(buf, edit) -> bytes:
    tree = read_model(buf)
    edit(tree)
    return pack(tree)


def _constant_tensor(tree) -> int:
    graph = tree.subgraphs[0]
    return next(
        t
        for t, tensor in enumerate(graph.tensors)
        if tree.buffers[tensor.buffer].data is not None and len(tree.buffers[tensor.buffer].data)
    )


def _set(obj, name, value):
    setattr(obj, name, value)


def _semantic_cases(buf) -> dict[str, tuple[bytes, str]]:
    """Object-API edits that keep the structure sound: ``{name: (bytes, message part)}``."""
    tree = read_model(buf)
    graph = tree.subgraphs[0]
    n_tensors, n_buffers, n_codes = len(graph.tensors), len(tree.buffers), len(tree.operatorCodes)
    const = _constant_tensor(tree)

    def op_input(t):
        op = t.subgraphs[0].operators[12 % len(t.subgraphs[0].operators)]
        op.inputs = np.array([n_tensors + 900, *op.inputs[1:]], dtype=np.int32)

    def short_data(t):
        b = t.buffers[t.subgraphs[0].tensors[const].buffer]
        b.data = b.data[:-4]

    def negative_shape(t):
        tensor = t.subgraphs[0].tensors[t.subgraphs[0].inputs[0]]
        tensor.shape = np.array([1, -28, 28, 1], dtype=np.int32)

    def per_channel(t):
        tensor = t.subgraphs[0].tensors[const]
        q = _tflite.schema().QuantizationParametersT()
        q.scale = np.ones(int(tensor.shape[0]) + 3, dtype=np.float32)
        q.zeroPoint = np.zeros(q.scale.size, dtype=np.int64)
        tensor.quantization = q

    edits = {
        "buffer_index": (lambda t: _set(t.subgraphs[0].tensors[3], "buffer", n_buffers + 7),
                         f"uses buffer {n_buffers + 7}, but the model has {n_buffers} buffers"),
        "opcode_index": (lambda t: _set(t.subgraphs[0].operators[2], "opcodeIndex", n_codes),
                         f"uses operator code {n_codes}, but the model has {n_codes}"),
        "op_tensor_index": (op_input, f"reads tensor {n_tensors + 900}, but the subgraph has "
                                      f"{n_tensors} tensors"),
        "output_tensor_index": (
            lambda t: _set(t.subgraphs[0], "outputs", np.array([n_tensors], dtype=np.int32)),
            f"the outputs of subgraph 0 reads tensor {n_tensors}"),
        "constant_size": (short_data, f"tensor {const} of subgraph 0 has the shape"),
        "negative_shape": (negative_shape, "has the negative shape [1, -28, 28, 1]"),
        "no_subgraph": (lambda t: _set(t, "subgraphs", []), "it has no subgraph"),
        "buffer0_data": (
            lambda t: _set(t.buffers[0], "data", np.ones(4, dtype=np.uint8)), "buffer 0"),
        "per_channel_scales": (per_channel, "quantization scales"),
    }  # fmt: skip
    return {name: (_edited(buf, edit), part) for name, (edit, part) in edits.items()}


def _custom_options(buf, code: str) -> tuple[int, int]:
    """Where the custom options of the first ``code`` operator lie in ``buf``."""
    s = _tflite.schema()
    model = s.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        if model.OperatorCodes(op.OpcodeIndex()).CustomCode() == code.encode():
            return op._tab.Vector(op._tab.Offset(14)), op.CustomOptionsLength()
    raise AssertionError(f"no {code} operator")


def _damaged(buf) -> dict[str, tuple[bytes, str | None]]:
    """``{case: (damaged bytes, None or a part of the message it must raise)}``.

    Cases with a message part must fail validation; the others (random flips, zero fills
    inside the file) may fail or be harmless.
    """
    n = len(buf)
    cases: dict[str, tuple[bytes, str | None]] = {}
    cuts = sorted({0, 4, 8, 100, n - 1, *np.linspace(200, n - 2, CUTS - 5).astype(int).tolist()})
    for cut in cuts:
        cases[f"cut_{cut}"] = (buf[:cut], "" if cut < 8 else "truncated or damaged")
    for offset, length in [(0, 4), (0, 64), (8, 64), (64, 4096), (n // 4, 256),
                           (n // 2, 4096), (3 * n // 4, 64), (n - 4096, 4096)]:  # fmt: skip
        data = bytearray(buf)
        data[offset : offset + length] = bytes(len(data[offset : offset + length]))
        cases[f"zero_{offset}_{length}"] = (bytes(data), "" if offset == 0 else None)
    for seed in FLIP_SEEDS:
        rng = np.random.default_rng(seed)
        data = np.frombuffer(buf, dtype=np.uint8).copy()
        where = rng.choice(n, size=[1, 4, 16, 64][seed % 4], replace=False)
        data[where] ^= rng.integers(1, 256, size=where.size, dtype=np.uint8)
        cases[f"flip_seed{seed}"] = (data.tobytes(), None)
    for name, root in (("root_past_end", n + 100), ("root_at_end", n - 2), ("root_zero", 0)):
        data = bytearray(buf)
        struct.pack_into("<I", data, 0, root)
        cases[name] = (bytes(data), "")
    # the FlexBuffers options of a binary convolution: the root's byte width and offset, the
    # type of channels_in (the C++ kernel reads them unchecked: a crash or a division by 0)
    start, length = _custom_options(buf, "LceBconv2d")
    for back in (1, 3, 11):
        data = bytearray(buf)
        data[start + length - back] ^= 0xFF
        cases[f"bconv_options_{back}"] = (bytes(data), "(LceBconv2d) has")
    for name, (data, part) in _semantic_cases(buf).items():
        cases[name] = (data, part)
    return cases


@pytest.fixture(scope="module")
def damaged(original):
    """``{case: (path, validation error or None, expected message part or None)}``."""
    root, buf, _ = original
    out = {}
    for name, (data, part) in _damaged(buf).items():
        path = root / f"{name}.tflite"
        path.write_bytes(data)
        try:
            load_flatbuffer(path)
            error = None
        except FlatbufferError as err:
            error = str(err)
        out[name] = (path, error, part)
    return out


def _graph_structure(tree) -> list:
    """The indices that wire a model: per subgraph its inputs, outputs, each operator's code,
    inputs and outputs, and each tensor's buffer; and the operator codes' names."""
    codes = [(c.builtinCode, c.deprecatedBuiltinCode, c.customCode) for c in tree.operatorCodes]
    graphs = [
        (
            list(g.inputs),
            list(g.outputs),
            [(op.opcodeIndex, list(op.inputs), list(op.outputs)) for op in g.operators],
            [t.buffer for t in g.tensors],
        )
        for g in tree.subgraphs
    ]
    return [codes, graphs, len(tree.buffers)]


def test_original_validates(original):
    _, buf, _ = original
    assert load_flatbuffer(buf) == buf
    assert _tflite.validate_flatbuffer(buf) is None


def test_damage_is_rejected_or_harmless(original, damaged):
    for name, (path, error, part) in damaged.items():
        if part is not None:
            assert error is not None, f"{name}: damage passed validation"
            assert part in error, f"{name}: {error!r} lacks {part!r}"
        if error is not None:
            assert error.startswith(repr(str(path))), (name, error)
            assert "\n" not in error, (name, error)
    # a file that passes validation has the original's graph: whatever the damage changed
    # (weights, names, scales), no operator, tensor or buffer index moved
    _, buf, _ = original
    structure = _graph_structure(read_model(buf))
    for name, (path, error, _) in damaged.items():
        if error is None:
            assert _graph_structure(read_model(path.read_bytes())) == structure, name


def test_bytes_in_memory_are_validated(original):
    _, buf, _ = original
    with pytest.raises(FlatbufferError, match="the given data is truncated or damaged"):
        load_flatbuffer(buf[: len(buf) // 2])
    with pytest.raises(FlatbufferError, match="not a TFLite/LCE flatbuffer"):
        load_flatbuffer(b"\0" * 16)


# Runs ``melius_larq.cli.main`` for each (file, argv) given as JSON on stdin; prints a line
# before each run (so the test can name the file a crash happened on) and one result line.
RUNNER = r"""
import contextlib, functools, io, json, sys, traceback
import melius_larq.cli as cli
import melius_larq.cli.deployment as deployment
deployment._load_keras = functools.cache(deployment._load_keras)  # load the Keras model once
for job in json.load(sys.stdin):
    print("START", json.dumps(job), flush=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(job)
        except BaseException:
            code = "exception"
            err.write(traceback.format_exc())
    print("RESULT", json.dumps({"code": code, "stderr": err.getvalue()}), flush=True)
"""


def _run_cli(jobs: list[list[str]]) -> list[dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(jobs), capture_output=True, text=True,
        env=env, timeout=600,
    )  # fmt: skip
    started = [line[6:] for line in proc.stdout.splitlines() if line.startswith("START ")]
    results = [
        json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT")
    ]
    assert proc.returncode == 0, (
        f"the CLI process died (return code {proc.returncode}) while running "
        f"{started[-1] if started else 'nothing'}:\n{proc.stderr[-2000:]}"
    )
    assert len(results) == len(jobs)
    return results


def test_cli_verbs_reject_damage_with_one_line(original, damaged):
    _, _, keras_path = original
    jobs, expect = [], []
    for name, (path, error, _) in damaged.items():
        for verb in (
            ["report", str(path)],
            ["verify", str(path), "--keras", str(keras_path), "--samples", "2"],
            ["bench", str(path), "--runs", "1", "--warmup", "0", "--threads", "1"],
        ):
            jobs.append(verb)
            expect.append((name, path, error))
    outcomes = {"verify": {}, "bench": {}}
    for job, (name, path, error), result in zip(jobs, expect, _run_cli(jobs), strict=True):
        code, stderr = result["code"], result["stderr"]
        assert "Traceback" not in stderr, (job, stderr)
        if error is not None:
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert code == 2, (job, code, stderr)
            assert len(lines) == 1 and lines[0].startswith("error: "), (job, stderr)
            assert repr(str(path)) in lines[0], (job, stderr)
        elif job[0] == "report":  # valid structure: the report reads it
            assert code == 0, (name, job, code, stderr)
        else:  # the interpreter ran it, or refused it with a one-line error
            errors = [line for line in stderr.splitlines() if "error: " in line]
            assert code in (0, 1) or (code == 2 and len(errors) == 1), (name, job, code, stderr)
            outcomes[job[0]][name] = {0: "ran", 1: "ran, check failed", 2: "refused"}[code]
    print(json.dumps(outcomes, indent=1))
