"""A seeded sweep of randomly damaged flatbuffers: none may crash the process.

Each copy of a converted MeliusNetTiny flatbuffer is damaged by one seeded edit (cut short,
a run of bytes overwritten with random values, scattered bytes overwritten, a region zeroed),
then loaded with :func:`load_flatbuffer` and, when it passes validation, run once by the
LCE interpreter. Every copy must end in a ``FlatbufferError``, an error the interpreter
raises, or a result; a signal (segmentation fault, abort) or a hang fails the test with the
seed of the copy, which :func:`damage` rebuilds.

The copies run in a child process that prints a line before each one, so a crash names its
copy; after a crash the sweep goes on in a new child from the next copy.

The damage such sweeps found crashing or hanging the interpreter is also checked here, quickly,
by object-API edits of small models: an operator's output index moved onto a tensor another
operator writes (the runtime resizes it to the second writer's shape, and the first writer
and the readers run past its end), a binary filter that lost its data and got a zero
dimension (a division by zero), a pooling filter size below 1 (an output of billions of
elements).
"""

import json
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest

import melius_larq
from melius_larq._tflite import (
    FlatbufferError,
    convert_float,
    load_flatbuffer,
    operators,
    pack,
    read_model,
)

pytest.importorskip("larq_compute_engine")

SWEEP_COPIES = 2000  # the large test's damaged copies (seeds 0..SWEEP_COPIES-1)
COPY_TIMEOUT_S = 60  # longest time one copy may take before it counts as a hang
# Copies among seeds 0-11999 that crashed the interpreter (4106: an output index moved onto
# another operator's output; 7603, 8323: a binary filter without data and with a zero
# dimension) or hung it (9110: a pooling filter height of -33554431) before validation
# checked for them; the seeds reproduce them on the fixture's file (TensorFlow 2.16.2, LCE
# 0.16.0 convert the same model to the same bytes).
REGRESSION_SEEDS = (4106, 7603, 8323, 9110)


def damage(buf: bytes, seed: int) -> bytes:
    """A copy of ``buf`` damaged by one edit drawn from ``seed`` (the kind is ``seed % 4``)."""
    rng = np.random.default_rng(seed)
    n = len(buf)
    data = np.frombuffer(buf, dtype=np.uint8).copy()
    kind = seed % 4
    if kind == 0:  # cut short
        return buf[: int(rng.integers(0, n))]
    if kind == 1:  # a run of bytes overwritten with random values
        length = int(rng.choice([1, 2, 4, 8, 16, 64, 256, 4096]))
        at = int(rng.integers(0, n - length))
        data[at : at + length] = rng.integers(0, 256, size=length, dtype=np.uint8)
    elif kind == 2:  # scattered bytes overwritten
        where = rng.choice(n, size=int(rng.choice([1, 4, 16, 64])), replace=False)
        data[where] = rng.integers(0, 256, size=where.size, dtype=np.uint8)
    else:  # a region zeroed
        length = int(rng.choice([1, 4, 16, 64, 256, 4096]))
        at = int(rng.integers(0, n - length))
        data[at : at + length] = 0
    return data.tobytes()


# Runs the copies ``seeds`` of the flatbuffer at ``path`` (argv: path, JSON list of seeds);
# prints "START seed" before each copy and "DONE seed outcome" after it.
RUNNER = r"""
import json, sys
import numpy as np
import melius_larq
from melius_larq._tflite import FlatbufferError, load_flatbuffer
from melius_larq.deploy.verify import lce_interpreter
sys.path.insert(0, sys.argv[3])
from test_flatbuffer_damage_sweep import damage
original = open(sys.argv[1], "rb").read()
for seed in json.loads(sys.argv[2]):
    print("START", seed, flush=True)
    data = damage(original, seed)
    try:
        load_flatbuffer(data)
    except FlatbufferError:
        print("DONE", seed, "rejected", flush=True)
        continue
    try:
        interpreter = lce_interpreter(data)
        x = np.random.default_rng(seed).uniform(-1, 1, interpreter.input_shapes[0])
        interpreter.predict(x.astype(interpreter.input_types[0]))
        outcome = "ran"
    except Exception:  # the interpreter refused the file with an error: no crash
        outcome = "refused"
    print("DONE", seed, outcome, flush=True)
"""


def _child(path, seeds) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path), json.dumps(list(seeds)), here],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def sweep(path, seeds, *, log=None) -> dict:
    """Runs the damaged copies ``seeds`` of the flatbuffer at ``path`` in child processes.

    Returns:
        ``{"rejected": n, "ran": n, "refused": n, "crashed": {seed: how}, "hung": [seeds]}``.
    """
    result = {"rejected": 0, "ran": 0, "refused": 0, "crashed": {}, "hung": []}
    todo = list(seeds)
    while todo:
        proc, current, deadline = _child(path, todo), None, None
        while True:
            wait = None if current is None else max(0.0, deadline - time.monotonic())
            if not select.select([proc.stdout], [], [], wait)[0]:
                proc.kill()
                result["hung"].append(current)
                break
            line = proc.stdout.readline()
            if not line:  # the child ended: done, or killed by a signal during ``current``
                code = proc.wait()
                if current is not None:
                    result["crashed"][current] = f"exit code {code}: {proc.stderr.read()[-300:]}"
                break
            word, seed, *outcome = line.split()
            if word == "START":
                current, deadline = int(seed), time.monotonic() + COPY_TIMEOUT_S
            else:
                result[outcome[0]] += 1
                current = None
                if log and sum(result[k] for k in ("rejected", "ran", "refused")) % 100 == 0:
                    log(json.dumps(result))
        todo = [] if current is None else todo[todo.index(current) + 1 :]
        proc.stdout.close(), proc.stderr.close()
    return result


@pytest.fixture(scope="module")
def tiny_flatbuffer(tmp_path_factory):
    from melius_larq._compat import tf
    from melius_larq.deploy import convert_model

    tf.keras.utils.set_random_seed(0)
    model = melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10)
    path = tmp_path_factory.mktemp("sweep") / "tiny.tflite"
    path.write_bytes(convert_model(model))
    return path


@pytest.mark.large
def test_copies_that_crashed_before_are_rejected(tiny_flatbuffer):
    result = sweep(tiny_flatbuffer, REGRESSION_SEEDS)
    assert not result["crashed"] and not result["hung"], result
    assert result["rejected"] == len(REGRESSION_SEEDS), (
        f"{result}: a copy passed validation (if the converter now writes other bytes, the "
        "seeds no longer reproduce the damage they were chosen for)"
    )


@pytest.mark.large
def test_no_damaged_copy_crashes(tiny_flatbuffer):
    result = sweep(tiny_flatbuffer, range(SWEEP_COPIES))
    print(json.dumps(result))
    assert not result["crashed"], f"damaged copies crashed the process: {result['crashed']}"
    assert not result["hung"], f"damaged copies hung the interpreter: {result['hung']}"
    # the sweep exercised both sides: damage caught by validation and damage that runs
    assert result["rejected"] > SWEEP_COPIES // 10 and result["ran"] > SWEEP_COPIES // 10


@pytest.fixture(scope="module")
def small_lce_flatbuffer():
    """An LCE model: a binary convolution (``LceBconv2d``), then FULLY_CONNECTED and SOFTMAX."""
    import larq as lq

    from melius_larq._compat import tf
    from melius_larq.deploy import convert_model

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 32))
    x = lq.layers.QuantConv2D(32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False)(inputs)  # fmt: skip
    x = tf.keras.layers.Dense(3, activation="softmax")(tf.keras.layers.Flatten()(x))
    return convert_model(tf.keras.Model(inputs, x))


def _edited(buf, edit) -> bytes:
    tree = read_model(buf)
    edit(tree, tree.subgraphs[0])
    return pack(tree)


def _op(tree, graph, name) -> int:
    return next(k for k, op in enumerate(operators(tree)) if op["op"] == name)


def _rewire_last(target):
    """An edit making the last operator write the tensor ``target(tree, graph)``."""

    def edit(tree, graph):
        graph.operators[-1].outputs = np.array([target(tree, graph)], dtype=np.int32)

    return edit


def _constant(tree, graph) -> int:
    return next(t for t, x in enumerate(graph.tensors) if tree.buffers[x.buffer].data is not None)


def _filter_lost(shape):
    """An edit dropping the binary filter's data and giving it ``shape``: a crash in LCE 0.16
    (a division by zero) when a dimension is 0."""

    def edit(tree, graph):
        k = _op(tree, graph, "LceBconv2d")
        tensor = graph.tensors[graph.operators[k].inputs[1]]
        tree.buffers[tensor.buffer].data = None
        tensor.shape = np.array(shape, dtype=np.int32)

    return edit


def _kernel_lost(tree, graph):
    tree.buffers[graph.tensors[_constant(tree, graph)].buffer].data = None


def _last_two_swapped(tree, graph):
    graph.operators[-2:] = graph.operators[-2:][::-1]


# (case, edit, message) on the LCE model; each leaves the structure sound and is caught by
# the check of one rule (the crashes a damage sweep found: an output index moved onto another
# operator's output, a filter losing its data and shape)
EDITS = [
    ("written_twice", _rewire_last(lambda t, g: int(g.operators[0].outputs[0])),
     r"writes tensor \d+, which operator 0 writes already"),
    ("writes_the_input", _rewire_last(lambda t, g: int(g.inputs[0])),
     r"writes tensor \d+, which is an input"),
    ("writes_a_constant", _rewire_last(_constant), r"writes tensor \d+, which holds constant data"),
    ("reads_an_undefined_tensor", _kernel_lost,
     r"reads tensor \d+, which is no input, holds no data and no earlier operator writes"),
    ("read_before_its_writer", _last_two_swapped, r"operator \d+ of subgraph 0 reads tensor"),
    ("bconv_filter_zero", _filter_lost([32, 3, 0, 0]),
     r"\(LceBconv2d\) has the filter shape \[32, 3, 0, 0\], not 4 dimensions of at least 1"),
    ("bconv_filter_scalar", _filter_lost([]), r"has the filter shape \[\], not 4 dimensions"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "message"), [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_an_unsound_dataflow_is_rejected(small_lce_flatbuffer, edit, message):
    load_flatbuffer(small_lce_flatbuffer)  # the original is valid
    with pytest.raises(FlatbufferError, match=message):
        load_flatbuffer(_edited(small_lce_flatbuffer, edit))


@pytest.mark.parametrize("field", ["strideW", "filterHeight", "dilationHFactor"])
def test_a_stride_filter_or_dilation_below_1_is_rejected(field):
    """A pooling filter of -33554431 (a damaged byte) made an output of billions of elements."""
    from melius_larq._compat import tf

    inputs = tf.keras.Input((8, 8, 2))
    pool = tf.keras.layers.AveragePooling2D(2)(inputs)
    conv = tf.keras.layers.Conv2D(2, 3, dilation_rate=2)(inputs)
    buf = convert_float(tf.keras.Model(inputs, [pool, conv]))

    def edit(tree, graph):
        for op in graph.operators:
            if hasattr(op.builtinOptions, field):
                setattr(op.builtinOptions, field, -33554431 if field == "filterHeight" else 0)

    value = -33554431 if field == "filterHeight" else 0
    with pytest.raises(FlatbufferError, match=rf"has the option {field}={value}, which its "):
        load_flatbuffer(_edited(buf, edit))
