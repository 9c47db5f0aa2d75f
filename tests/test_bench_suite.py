"""make bench's parts: per-part latency breakdown, binary-MAC rate, training throughput, table."""

import pytest
from conftest import require

import melius_larq
from melius_larq._compat import tf
from melius_larq.deploy.breakdown import (
    binary_conv_rate,
    format_breakdown,
    latency_breakdown,
    parts_of,
)
from melius_larq.deploy.suite import format_suite, randomize_batchnorm
from melius_larq.deploy.train_bench import training_throughput

require("larq_compute_engine")

TINY_SHAPE = (28, 28, 1)


def _tiny():
    return melius_larq.create_model("MeliusNetTiny", input_shape=TINY_SHAPE, num_classes=10,
                                    stem="small")  # fmt: skip


def test_parts_follow_the_graph_and_add_up_to_the_accounting():
    model = _tiny()
    parts = parts_of(model)
    names = [p["part"] for p in parts]
    assert names[0] == "stem" and names[-1] == "head"
    assert names[1:3] == ["section 0 blocks", "section 0 transition"]
    counts = melius_larq.summary(model, print_fn=None)
    assert sum(p["bops"] for p in parts) == counts["bops"]
    assert sum(p["flops"] for p in parts) == counts["flops"]
    assert parts[-1]["last_layer"] == model.layers[-1].name
    plain = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has 1 part"):
        parts_of(plain)


def _ops_as_milliseconds(buf):
    """A stand-in latency that a flatbuffer determines: 1 ms per operator."""
    from melius_larq.deploy import op_inventory

    return float(sum(op_inventory(buf).values()))


# With LCE conversions (10 of MeliusNetTiny: ~15 s) in the large set; make test converts
# nothing and times each prefix by its number of Keras layers.
@pytest.mark.parametrize("convert", [False, pytest.param(True, marks=pytest.mark.large)])
def test_latency_breakdown_times_every_prefix_up_to_the_whole_model(monkeypatch, convert):
    """Each part is timed as the prefix model ending at its last layer, and the last prefix
    is the whole model: with a stand-in timer the total equals the whole model's on its
    own, and each part's time is its prefix's increment."""
    from melius_larq.deploy import breakdown
    from melius_larq.deploy.convert import convert_model

    model = randomize_batchnorm(_tiny())
    bn = model.get_layer("section_0_block_0_dense_bn")
    assert bn.gamma.numpy().min() > 0 and bn.moving_mean.numpy().std() > 0.1
    if convert:
        latency, whole = _ops_as_milliseconds, _ops_as_milliseconds(convert_model(model))
    else:
        monkeypatch.setattr(breakdown, "convert_model", lambda prefix, **kw: prefix)
        latency, whole = (lambda prefix: float(len(prefix.layers))), float(len(model.layers))
    timed = []

    def fake_benchmark(buf, *, threads, runs, warmup):
        timed.append(latency(buf))
        return {threads[0]: {"median_ms": timed[-1]}}

    monkeypatch.setattr(breakdown, "benchmark_lce", fake_benchmark)
    result = latency_breakdown(model, runs=3, warmup=1, progress=False)
    parts = result["parts"]
    assert len(timed) == len(parts) == len(parts_of(model))
    assert [p["cumulative_ms"] for p in parts] == timed
    assert timed == sorted(timed) and len(set(timed)) == len(timed)  # every part adds some
    assert result["total_ms"] == whole
    assert [p["ms"] for p in parts] == [b - a for a, b in zip([0.0, *timed], timed)]
    sections = [p for p in parts if p["bops"]]
    assert sections and all(p["gbops_per_s"] == p["bops"] / (p["ms"] * 1e6) for p in sections)


def test_binary_conv_rate_and_breakdown_table():
    rate = binary_conv_rate(size=8, channels=64, filters=32, runs=3, warmup=1)
    assert rate["bops"] == 8 * 8 * 9 * 64 * 32 and rate["gbops_per_s"] > 0
    result = {"model": "m", "threads": 1, "runs": 3, "total_ms": 2.0, "fold_batchnorm": True,
              "parts": [{"part": "stem", "ms": 0.5, "cumulative_ms": 0.5, "share": 0.25,
                         "bops": 0, "flops": 10, "gbops_per_s": None},
                        {"part": "head", "ms": 1.5, "cumulative_ms": 2.0, "share": 0.75,
                         "bops": 0, "flops": 5, "gbops_per_s": None}]}  # fmt: skip
    table = format_breakdown(result, rate)
    assert "| stem |" in table and "Isolated binary 3x3 conv (8x8x64 -> 32)" in table


@pytest.mark.large  # trains a model under a mixed-precision policy: ~20 s
def test_training_throughput_of_a_mixed_precision_model():
    stats = training_throughput(_tiny, batch_size=4, steps=1, warmup=1, input_shape=TINY_SHAPE,
                                num_classes=10, precision="mixed_bfloat16")  # fmt: skip
    assert stats["images_per_s"] > 0 and stats["precision"] == "mixed_bfloat16"
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
    with pytest.raises(ValueError, match="Unknown precision 'int4'"):
        training_throughput(_tiny, precision="int4")


def test_suite_table_reports_ratios_against_the_peers():
    row = {"runtime": "LCE", "threads": 1, "p90_ms": 1.0}
    result = {
        "machine": {"cpu": "cpu", "cores": 2, "machine": "x86_64", "tensorflow": "2.16.2"},
        "runs": 20,
        "rows": [
            {**row, "model": "melius_larq MeliusNet22", "median_ms": 40.0},
            {**row, "model": "larq_zoo MeliusNet22", "median_ms": 50.0},
            {**row, "model": "MobileNet-v1 1.0 (float)", "median_ms": 10.0},
        ],
        "sizes": [],
        "training": [
            {"model": "melius_larq MeliusNet22", "precision": "mixed_bfloat16",
             "jit_compile": False, "images_per_s": 9.0, "step_ms": 1778},
            {"model": "larq_zoo MeliusNet22", "precision": "float32", "jit_compile": False,
             "images_per_s": 4.0, "step_ms": 4000},
        ],
    }  # fmt: skip
    table = format_suite(result)
    assert "| melius_larq MeliusNet22 | LCE | 1 | 40.0 | 1.0 | 0.80 | 4.00 |" in table
    assert "| melius_larq MeliusNet22 | mixed_bfloat16 | no | 9.00 | 1778 | 2.25 |" in table


def test_alternating_rounds_interleave_and_keep_the_best_median(monkeypatch):
    from melius_larq.deploy import bench
    from melius_larq.deploy.convert import convert_model

    buf = convert_model(randomize_batchnorm(_tiny()))
    order, scripted = [], iter([3.0, 5.0, 2.0, 6.0, 4.0, 4.0])

    def fake_time_calls(fn, *, runs, warmup, progress):
        fn()  # the interpreter really runs
        order.append(fn)
        return {"median_ms": next(scripted)}

    monkeypatch.setattr(bench, "_time_calls", fake_time_calls)
    result = bench.benchmark_alternating({"a": (buf, False), "b": (buf, True)}, rounds=3, runs=2)
    assert order[0] is order[2] is order[4] and order[1] is order[3] is order[5]  # a, b, a, b...
    assert result["a"] == {"best_median_ms": 2.0, "medians_ms": [3.0, 2.0, 4.0],
                           "use_xnnpack": False}  # fmt: skip
    assert result["b"]["best_median_ms"] == 4.0 and result["b"]["use_xnnpack"] is True
    with pytest.raises(ValueError, match="rounds >= 1, but got 0"):
        bench.benchmark_alternating({"a": (buf, False)}, rounds=0)


def test_suite_table_shows_the_head_to_head():
    result = {
        "machine": {"cpu": "cpu", "cores": 2, "machine": "x86_64", "tensorflow": "2.16.2"},
        "runs": 20, "rows": [], "sizes": [],
        "head_to_head": {"rounds": 2, "runs": 20, "threads": 1, "models": {
            "ours (XNNPACK)": {"best_median_ms": 44.0, "medians_ms": [44.0, 45.5],
                               "use_xnnpack": True, "x_larq_zoo": 0.96},
        }},
    }  # fmt: skip
    assert "| ours (XNNPACK) | on | 44.0 | 44.0, 45.5 | 0.96 |" in format_suite(result)


@pytest.mark.large  # converts two models, one through LCE's own converter: ~20 s
def test_head_to_head_converts_the_peer_with_lces_converter(tmp_path):
    from melius_larq.deploy.suite import run_head_to_head

    builders = {"melius_larq MeliusNet22": _tiny, "larq_zoo MeliusNet22": _tiny}
    result = run_head_to_head(tmp_path, builders, rounds=2, runs=2, warmup=0)
    models = result["models"]
    assert len(models) == 4 and all(len(m["medians_ms"]) == 2 for m in models.values())
    assert models["melius_larq MeliusNet22 int8 (XNNPACK)"]["use_xnnpack"] is True
    assert models["larq_zoo MeliusNet22 (LCE converter, default runtime)"]["x_larq_zoo"] == 1.0
    assert (tmp_path / "larq_zoo_MeliusNet22_lce_default.tflite").stat().st_size > 0
