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
from melius_larq.deploy.suite import randomize_batchnorm
from melius_larq.deploy.train_bench import training_throughput, training_throughput_alternating

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


def test_alternating_rounds_interleave_and_keep_median_and_range(monkeypatch):
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
    assert result["a"] == {"median_ms": 3.0, "min_ms": 2.0, "max_ms": 4.0, "best_median_ms": 2.0,
                           "medians_ms": [3.0, 2.0, 4.0], "use_xnnpack": False}  # fmt: skip
    assert result["b"]["median_ms"] == 5.0 and result["b"]["use_xnnpack"] is True
    with pytest.raises(ValueError, match="rounds >= 1, but got 0"):
        bench.benchmark_alternating({"a": (buf, False)}, rounds=0)


def test_ratios_are_taken_round_by_round():
    from melius_larq.deploy.bench import ratio_over_rounds

    timed = {"a": {"medians_ms": [2.0, 4.0, 6.0]}, "b": {"medians_ms": [1.0, 8.0, 3.0]}}
    r = ratio_over_rounds(timed, "a", "b")
    # per round 2, 0.5, 2: median 2 (the ratio of the medians, 4 / 3, would hide the slow round)
    assert r == {"median": 2.0, "min": 0.5, "max": 2.0, "per_round": [2.0, 0.5, 2.0]}


def _micro(input_shape=(16, 16, 3)):
    from conftest import micro_bnn

    return micro_bnn(input_shape=input_shape, num_classes=4)


def _float_micro():
    inputs = tf.keras.Input((16, 16, 3))
    x = tf.keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(4, activation="softmax")(x))


def test_suite_times_every_configuration_and_writes_its_tables(tmp_path):
    """The whole suite on micro models: every row, like-for-like ratios, files from one run."""
    import json

    from melius_larq.deploy import suite

    builders = {suite.MELIUSNET22: _micro, suite.PEER: _micro, suite.MOBILENET: _float_micro}
    page = tmp_path / "page.md"
    page.write_text("# Bench\n\n<!-- begin bench.md -->\nold\n<!-- end bench.md -->\n\nprose\n")
    result = suite.run_suite(tmp_path / "out", flatbuffers=tmp_path / "fb", threads=(1,),
                             rounds=2, runs=2, warmup=0, training=False, breakdown=False,
                             builders=builders, page=page)  # fmt: skip
    assert page.read_text() == (
        "# Bench\n\n<!-- begin bench.md -->\n"
        + (tmp_path / "out" / "bench.md").read_text()
        + "<!-- end bench.md -->\n\nprose\n"
    )
    rows = {r["model"]: r for r in result["rows"]}
    x = suite.XNNPACK
    assert list(rows) == [suite.MELIUSNET22, suite.MELIUSNET22 + x, suite.INT8 + x, suite.UNFOLDED,
                          suite.PEER, suite.PEER + x, suite.MOBILENET + x]  # fmt: skip
    for name, row in rows.items():
        reference = rows[suite.PEER + x if row["use_xnnpack"] else suite.PEER]
        assert row["use_xnnpack"] == name.endswith(x)
        assert row["x_larq_zoo"]["per_round"] == [  # like for like: the same XNNPACK setting
            a / b for a, b in zip(row["medians_ms"], reference["medians_ms"], strict=True)
        ]
        assert len(row["medians_ms"]) == 2 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    assert rows[suite.PEER]["x_larq_zoo"]["median"] == 1.0
    assert rows[suite.MOBILENET + x]["x_mobilenet"]["median"] == 1.0
    stored = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert (tmp_path / "out" / "bench.md").read_text() == suite.format_suite(stored) + "\n"
    assert (tmp_path / "out" / "bench.png").stat().st_size > 0
    sizes = {s["model"]: s for s in result["sizes"]}
    int8_file = tmp_path / "fb" / "melius_larq_MeliusNet22_int8.tflite"
    assert int8_file.stat().st_size == round(sizes[suite.MELIUSNET22]["int8_tflite_mib"] * 2**20)
    for name in (suite.MELIUSNET22, suite.PEER, suite.MOBILENET):
        path = tmp_path / "fb" / (name.replace(" ", "_") + ".tflite")
        assert path.stat().st_size == round(sizes[name]["tflite_mib"] * 2**20)
    table = suite.format_suite(stored)
    r = rows[suite.MELIUSNET22 + x]
    assert (f"| {suite.MELIUSNET22} | on | 1 | {r['median_ms']:.1f} ({r['min_ms']:.1f}–"
            f"{r['max_ms']:.1f}) | {r['x_larq_zoo']['median']:.2f} (") in table  # fmt: skip


def test_head_to_head_runs_are_numbered_and_summarized(tmp_path, monkeypatch):
    import json

    from melius_larq.deploy import suite

    out = tmp_path / "h2h"
    out.mkdir()
    timing = {"threads": 1, "median_ms": 2.0, "min_ms": 1.0, "max_ms": 3.0,
              "medians_ms": [1.0, 2.0, 3.0], "use_xnnpack": False}  # fmt: skip
    rows = [{"model": "ours", **timing, "x_larq_zoo": {"median": 0.97, "min": 0.9, "max": 1.1}},
            {"model": "peer", **timing, "x_larq_zoo": {"median": 1.0, "min": 1.0, "max": 1.0}}]  # fmt: skip
    (out / "head_to_head_1.json").write_text(json.dumps({"rows": rows}))
    rows[0]["x_larq_zoo"]["median"] = 1.04
    (out / "head_to_head_2.json").write_text(json.dumps({"rows": rows}))
    (out / "head_to_head_10.json").write_text(json.dumps({"rows": rows[:1]}))
    summary = suite.summarize_head_to_head(out)
    assert summary["runs"] == ["head_to_head_1.json", "head_to_head_2.json",
                               "head_to_head_10.json"]  # fmt: skip
    assert summary["rows"]["ours"] == {"medians": [0.97, 1.04, 1.04], "min": 0.97, "max": 1.04}
    assert "| ours | 0.97 | 1.04 | 1.04 | 0.97–1.04 |" in suite.format_head_to_head_runs(summary)
    with pytest.raises(ValueError, match="holds no head_to_head_<n>.json run"):
        suite.summarize_head_to_head(tmp_path)
    # a new run takes the next number (11) and rewrites the summary over all four
    seen = {}
    monkeypatch.setattr(suite, "convert_all", lambda builders, fb, **kw: ({}, []))
    monkeypatch.setattr(suite, "latency_rows", lambda candidates, **kw: seen.update(kw) or rows)
    suite.run_head_to_head(out, builders={suite.PEER: None}, rounds=3, runs=4)
    assert seen == {"threads": 1, "rounds": 3, "runs": 4, "warmup": 3}
    assert (out / "head_to_head_11.json").exists()
    assert "for 4 runs of the command" in (out / "head_to_head.md").read_text()


def test_suite_command_rejects_bad_values_and_a_missing_peer(tmp_path, monkeypatch, capsys):
    from melius_larq.deploy import suite

    page = tmp_path / "page.md"
    page.write_text("<!-- begin bench.md -->\nno end marker\n")
    for argv in ([], ["--head-to-head-only"]):  # the page is checked before anything runs
        assert suite.main([*argv, "--out", str(tmp_path / "o"), "--page", str(page)]) == 2
        assert "needs one '<!-- begin" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    with pytest.raises(SystemExit) as exit_info:
        suite.main(["--rounds", "0"])
    assert exit_info.value.code == 2 and "--rounds must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.setattr(suite, "_peers", dict)
    for argv in ([], ["--head-to-head-only"]):
        assert suite.main([*argv, "--out", str(tmp_path / "o")]) == 2
        assert "pip install larq-zoo==2.4.0" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.large  # converts three models, one through LCE's own converter: ~20 s
def test_head_to_head_converts_the_peer_with_lces_converter(tmp_path):
    from melius_larq.deploy import suite

    builders = {suite.MELIUSNET22: _tiny, suite.PEER: _tiny}
    result = suite.run_head_to_head(tmp_path, builders=builders, rounds=2, runs=2, warmup=0)
    rows = {r["model"]: r for r in result["rows"]}
    assert len(rows) == 5 and all(len(r["medians_ms"]) == 2 for r in rows.values())
    assert rows[suite.INT8 + suite.XNNPACK]["use_xnnpack"] is True
    assert rows[suite.PEER]["x_larq_zoo"]["median"] == 1.0
    assert (tmp_path / "flatbuffers" / "larq_zoo_MeliusNet22.tflite").stat().st_size > 0
    assert (tmp_path / "head_to_head_1.json").exists() and (tmp_path / "head_to_head.md").exists()


def test_training_rows_take_ratios_round_by_round(monkeypatch):
    from melius_larq.deploy import suite, train_bench

    def fake(configs, *, rounds, steps):
        rates = {0: [4.0, 2.0], 1: [8.0, 8.0], 2: [1.0, 1.0], 3: [2.0, 4.0], 4: [3.0, 3.0]}
        return {label: {"images_per_s": sum(rates[i]) / 2, "min": min(rates[i]),
                        "max": max(rates[i]), "per_round": rates[i], "step_ms": 1.0,
                        "precision": p, "jit_compile": jit, "batch_size": 16, "steps": steps}
                for i, (label, (_, p, jit)) in enumerate(configs.items())}  # fmt: skip

    monkeypatch.setattr(train_bench, "training_throughput_alternating", fake)
    rows = suite.training_rows({suite.MELIUSNET22: None, suite.PEER: None}, rounds=2, steps=1)
    assert [(r["model"], r["precision"], r["jit_compile"]) for r in rows] == [
        (label, precision, jit) for label, _, precision, jit in suite.TRAINING
    ]
    # against larq_zoo float32 (the fourth configuration: 2 then 4 images/s), round by round
    assert rows[0]["x_larq_zoo"] == {"median": 1.25, "min": 0.5, "max": 2.0}
    assert rows[3]["x_larq_zoo"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    machine = {"cpu": "cpu", "cores": 2, "machine": "x86_64", "tensorflow": "2.16.2"}
    table = suite.format_suite({"machine": machine, "runs": 1, "rounds": 1, "rows": [],
                                "sizes": [], "training": rows})  # fmt: skip
    assert (
        "| melius_larq MeliusNet22 | float32 | no | 3.00 (2.00–4.00) | 1.25 (0.50–2.00) |" in table
    )


@pytest.mark.large  # builds and trains two small models: ~20 s
def test_training_configurations_take_turns():
    result = training_throughput_alternating(
        {"a": (_tiny, "float32", False), "b": (_tiny, "mixed_bfloat16", False)},
        rounds=2, steps=1, warmup=1, batch_size=4, input_shape=TINY_SHAPE, num_classes=10,
    )  # fmt: skip
    assert list(result) == ["a", "b"] and result["b"]["precision"] == "mixed_bfloat16"
    for r in result.values():
        assert len(r["per_round"]) == 2 and r["min"] <= r["images_per_s"] <= r["max"]
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
    with pytest.raises(ValueError, match="rounds, steps, warmup and batch_size >= 1"):
        training_throughput_alternating({}, rounds=0)
