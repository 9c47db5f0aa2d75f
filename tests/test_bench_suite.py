"""make bench's parts: per-part latency breakdown, binary-MAC rate, training throughput, table."""

import pytest

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

pytest.importorskip("larq_compute_engine")

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


def test_latency_breakdown_measures_every_prefix():
    model = randomize_batchnorm(_tiny())
    bn = model.get_layer("section_0_block_0_dense_bn")
    assert bn.gamma.numpy().min() > 0 and bn.moving_mean.numpy().std() > 0.1
    result = latency_breakdown(model, runs=3, warmup=1, progress=False)
    parts = result["parts"]
    assert all(p["cumulative_ms"] > 0 for p in parts)
    assert sum(p["ms"] for p in parts) == pytest.approx(result["total_ms"])
    assert any(p["gbops_per_s"] for p in parts if p["bops"])
    rate = binary_conv_rate(size=8, channels=64, filters=32, runs=3, warmup=1)
    assert rate["bops"] == 8 * 8 * 9 * 64 * 32 and rate["gbops_per_s"] > 0
    table = format_breakdown(result, rate)
    assert "| stem |" in table and "Isolated binary 3x3 conv (8x8x64 -> 32)" in table


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
