"""deploy.device.parse_benchmark_output on published benchmark_model transcripts.

Each fixture starts with '#' lines that cite where the transcript was published; the
tests drop that header and parse the rest as the tool printed it.
"""

from pathlib import Path

import pytest

from melius_larq.deploy.device import DeviceError, parse_benchmark_output

FIXTURES = Path(__file__).parent / "fixtures"


def _transcript(name: str) -> str:
    """The fixture without its source header, line endings as stored (CRLF stays CRLF)."""
    text = (FIXTURES / name).read_bytes().decode()
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


_TIMINGS = ("init_ms", "first_ms", "warmup_avg_ms", "avg_ms", "min_ms", "max_ms", "std_ms", "count")


def _timings(parsed: dict) -> tuple:
    """(init, first, warmup avg, avg, min, max, std) in ms and the count of timed runs."""
    return tuple(parsed[key] for key in _TIMINGS)


def test_lce_meliusnet22_android():
    parsed = parse_benchmark_output(_transcript("lce_benchmark_model_meliusnet22_android.txt"))
    assert _timings(parsed) == pytest.approx(
        (41.337, 121.877, 113.168, 110.704, 109.975, 112.904, 0.541, 50)
    )
    assert parsed["memory_mb"] == pytest.approx(17.2031)
    assert len(parsed["run_order"]) == 10 and len(parsed["by_node_type"]) == 11
    assert parsed["by_node_type"][0] == pytest.approx(
        {
            "Node type": "LceBconv2d",
            "count": 34,
            "avg ms": 77.154,
            "avg %": 69.804,
            "cdf %": 69.804,
            "mem KB": 0.0,
            "times called": 34,
        }  # fmt: skip
    )


def test_scientific_notation_start_column_and_all_same_warmup():
    """Slow model: averages like 2.95034e+06, one warm-up run printed as 'count=1 curr=T',
    per-node tables with a [start] column and names like '[name]:0'."""
    parsed = parse_benchmark_output(_transcript("benchmark_model_sci_notation_start_column.txt"))
    assert _timings(parsed) == pytest.approx(
        (17.187, 3512.391, 3512.39, 2950.34, 2727.568, 3189.954, 109.798, 50)
    )
    assert parsed["memory_mb"] == pytest.approx(46.0859)
    # The initialization profile (AllocateTensors) is not the inference profile.
    assert [r["node type"] for r in parsed["run_order"]] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX"
    ]  # fmt: skip
    assert parsed["run_order"][0] == pytest.approx(
        {
            "node type": "CONV_2D",
            "start": 0.066,
            "first": 87.754,
            "avg ms": 60.957,
            "%": 2.066,
            "cdf%": 2.066,
            "mem KB": 0.0,
            "times called": 1,
            "name": "MobilenetV1/MobilenetV1/Conv2d_0/Relu6",
        }  # fmt: skip
    )
    by_type = {r["Node type"]: r for r in parsed["by_node_type"]}
    assert list(by_type) == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "SOFTMAX",
        "SQUEEZE",
    ]
    assert by_type["CONV_2D"]["avg ms"] == pytest.approx(2651.853)
    assert by_type["SQUEEZE"]["avg %"] == pytest.approx(0.001)


def test_info_prefixes_and_xnnpack_node_types_with_spaces():
    parsed = parse_benchmark_output(_transcript("benchmark_model_info_prefix_xnnpack.txt"))
    assert _timings(parsed) == pytest.approx(
        (16.772, 8.781, 7.51493, 7.45497, 6.373, 7.775, 0.256, 67)
    )
    assert parsed["memory_mb"] == pytest.approx(10.8789)
    assert [r["name"] for r in parsed["run_order"]] == [
        "Delegate/Convolution (NHWC, QU8) IGEMM:0",
        "Delegate/Convolution (NHWC, QU8) DWConv:1",
        "concat_1",
        "TFLite_Detection_PostProcess, TFLite_Detection_PostProcess:1, "
        "TFLite_Detection_PostProcess:2, TFLite_Detection_PostProcess:3",
    ]
    assert parsed["run_order"][0]["node type"] == "Convolution (NHWC, QU8) IGEMM"
    assert "start" not in parsed["run_order"][0]
    by_type = {r["Node type"]: r for r in parsed["by_node_type"]}
    assert len(by_type) == 8
    assert by_type["Convolution (NHWC, QU8) GEMM"] == pytest.approx(
        {
            "Node type": "Convolution (NHWC, QU8) GEMM",
            "count": 54,
            "avg ms": 3.34,
            "avg %": 45.622,
            "cdf %": 45.622,
            "mem KB": 0.0,
            "times called": 54,
        }  # fmt: skip
    )
    assert by_type["Add (ND, QU8)"]["count"] == 10


def test_tf1_average_inference_timings_no_stats():
    """TF 1.14-era: 'Average inference timings in us: Warmup: ..., Init: ..., no stats: ...'."""
    parsed = parse_benchmark_output(_transcript("benchmark_model_tf1_no_stats.txt"))
    assert _timings(parsed) == pytest.approx(
        (21.039, 751.932, 751.932, 747.733, 747.331, 748.577, 0.293, 50)
    )
    assert "memory_mb" not in parsed
    assert parsed["run_order"] == [] and parsed["by_node_type"] == []


def test_tf_readme_profile_before_summary_without_stat_lines():
    """Summary 'Warmup: ..., Init: ..., Inference: ...' after the profile; the statistics of
    the runs come from the profiler's 'Timings (microseconds)' line."""
    parsed = parse_benchmark_output(
        _transcript("benchmark_model_tf_readme_profile_then_summary.txt")
    )
    assert _timings(parsed) == pytest.approx(
        (38.467, None, 83.235, 79.7609, 77.385, 88.213, 1.929, 50)
    )
    assert [r["name"] for r in parsed["run_order"]] == [
        "MobilenetV1/MobilenetV1/Conv2d_0/Relu6",
        "MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6",
        "MobilenetV1/Predictions/Softmax",
    ]
    assert parsed["run_order"][1]["start"] == pytest.approx(4.27)
    assert [r["Node type"] for r in parsed["by_node_type"]] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX", "RESHAPE", "AVERAGE_POOL_2D"
    ]  # fmt: skip
    assert parsed["by_node_type"][1]["avg %"] == pytest.approx(10.73)


def test_lce_quicknet_crlf_line_endings():
    text = _transcript("lce_benchmark_model_quicknet_rpi4_crlf.txt")
    assert "\r\n" in text
    parsed = parse_benchmark_output(text)
    assert _timings(parsed) == pytest.approx(
        (3.501, 156.677, 43.2681, 33.0718, 32.687, 33.239, 0.129, 50)
    )
    assert parsed["run_order"] == [] and parsed["by_node_type"] == []


def test_logcat_prefixes_ansi_colours_percentiles_and_peak_memory():
    """Lines as `adb logcat` shows the benchmark app's output (format of the logcat lines in
    https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/tools/benchmark/android/README.md),
    newer versions' p5/median/p95 and the --report_peak_memory_footprint line
    (tensorflow/lite/tools/benchmark/benchmark_model.cc), with ANSI colour codes around."""
    text = "\n".join(
        "07-14 13:14:52.190 22838 22838 I tflite  : " + line
        for line in [
            "Initialized session in 92.318ms.",
            "Running benchmark for at least 1 iterations and at least 0.5 seconds but "
            "terminate if exceeding 150 seconds.",
            "count=3 first=235158 curr=200386 min=199462 max=235158 avg=211669 std=16613 "
            "p5=199462 median=200386 p95=235158",
            "Running benchmark for at least 25 iterations and at least 1 seconds but "
            "terminate if exceeding 150 seconds.",
            "\x1b[0;32mcount=25 first=187533 curr=140990 min=140071 max=195121 avg=145528 "
            "std=13583 p5=140545 median=141253 p95=187533\x1b[0m",
            "Inference timings in us: Init: 92318, First inference: 235158, "
            "Warmup (avg): 211669, Inference (avg): 145528",
            "Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102",
            "Overall peak memory footprint (MB) via periodic monitoring: 80.5",
        ]
    )
    parsed = parse_benchmark_output(text)
    assert _timings(parsed) == pytest.approx(
        (92.318, 235.158, 211.669, 145.528, 140.071, 195.121, 13.583, 25)
    )
    assert parsed["p5_ms"] == pytest.approx(140.545)
    assert parsed["p50_ms"] == pytest.approx(141.253)
    assert parsed["p95_ms"] == pytest.approx(187.533)
    assert parsed["memory_mb"] == pytest.approx(73.4102)
    assert parsed["peak_memory_mb"] == pytest.approx(80.5)


def test_android_app_summary_only():
    """The benchmark app's one logcat line (tools/benchmark/android/README.md)."""
    parsed = parse_benchmark_output(
        "... tflite  : Average inference timings in us: Warmup: 91471, Init: 4108, "
        "Inference: 80660.1\n"
    )
    assert _timings(parsed) == pytest.approx((4.108, None, 91.471, 80.6601, None, None, None, None))


def test_csv_profile():
    """--op_profiling_output_mode=csv (column titles of tensorflow/core/util/stats_calculator.cc)."""
    text = (
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
        "count=2 first=1200 curr=1100 min=1100 max=1200 avg=1150 std=50\n"
        "Running benchmark for at least 10 iterations and at least 1 seconds\n"
        "count=10 first=1000 curr=1000 min=990 max=1010 avg=1000 std=5\n"
        "Inference timings in us: Init: 500, First inference: 1200, Warmup (avg): 1150, "
        "Inference (avg): 1000\n"
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        "============================== Run Order ==============================\n"
        "node type, start, first, avg_ms, %, cdf%, mem KB, times called, name\n"
        "Convolution (NHWC, F32) IGEMM, 0.01, 0.7, 0.65, 65%, 65%, 0, 1, "
        "Delegate/Convolution (NHWC, F32) IGEMM:0\n"
        "\n"
        "============================== Summary by node type ==============================\n"
        "node type, count, avg_ms, avg %, cdf %, mem KB, times called\n"
        "Convolution (NHWC, F32) IGEMM, 1, 0.65, 65%, 65%, 0, 1\n"
        "SOFTMAX, 1, 0.35, 35%, 100%, 0, 1\n"
    )
    parsed = parse_benchmark_output(text)
    assert parsed["avg_ms"] == pytest.approx(1.0) and parsed["count"] == 10
    assert parsed["run_order"] == [
        pytest.approx(
            {
                "node type": "Convolution (NHWC, F32) IGEMM",
                "start": 0.01,
                "first": 0.7,
                "avg ms": 0.65,
                "%": 65,
                "cdf%": 65,
                "mem KB": 0,
                "times called": 1,
                "name": "Delegate/Convolution (NHWC, F32) IGEMM:0",
            }  # fmt: skip
        )
    ]
    assert [(r["Node type"], r["avg ms"], r["avg %"]) for r in parsed["by_node_type"]] == [
        ("Convolution (NHWC, F32) IGEMM", 0.65, 65.0),
        ("SOFTMAX", 0.35, 35.0),
    ]


# ------------------------------------------------------------------------------ failures


def test_failed_after_warmup_quotes_the_error():
    """Warm-up Stat line, then the timed runs fail (tensorflow/tensorflow#62506)."""
    with pytest.raises(DeviceError) as info:
        parse_benchmark_output(_transcript("benchmark_model_failed_flex_op.txt"))
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "No benchmark timings in the output: ERROR: Op type not registered "
        "'RegexSplitWithOffsets' in binary running on xxxxxx.xxxxxx.xxxxxx. Make sure the Op "
        "and Kernel are registered"
    )


@pytest.mark.parametrize(
    ("output", "quoted"),
    [
        # A TFLite benchmark_model without LCE's kernels on an LCE flatbuffer (messages of
        # tensorflow/lite/core/api/flatbuffer_conversions / interpreter_builder and
        # benchmark_tflite_model.cc).
        (
            "STARTING!\nLoaded model /data/local/tmp/m.tflite\n"
            "ERROR: Didn't find custom op for name 'LceBconv2d' with version 1\n"
            "ERROR: Registration failed.\n\nFailed to construct interpreter\n"
            "Benchmarking failed.\n",
            "ERROR: Didn't find custom op for name 'LceBconv2d' with version 1",
        ),
        (
            "INFO: Loaded model m.tflite\r\nERROR: Failed to allocate tensors!\r\n"
            "ERROR: Benchmarking failed.\r\n",
            "ERROR: Failed to allocate tensors!",
        ),
        ("Loaded model m.tflite\nAborted\n", "Aborted"),
        (
            "E/tflite  ( 8514): Didn't find op for builtin opcode 'CONV_2D' version '5'\n"
            "E/tflite  ( 8514): Registration failed.\n",
            "Didn't find op for builtin opcode 'CONV_2D' version '5'",
        ),
        (
            "/system/bin/sh: /data/local/tmp/lce_benchmark_model: not found\n",
            "/system/bin/sh: /data/local/tmp/lce_benchmark_model: not found",
        ),  # fmt: skip
        ("", "(no output)"),
        ("STARTING!\nLoaded model m.tflite\n", "Loaded model m.tflite"),
    ],
)
def test_no_timings_raise_device_error_quoting_the_tool(output, quoted):
    with pytest.raises(DeviceError) as info:
        parse_benchmark_output(output)
    assert str(info.value) == f"No benchmark timings in the output: {quoted}"


def test_benchmarking_failed_after_timings_is_a_failure():
    """The tool prints its summary even when runs failed, then 'Benchmarking failed.'."""
    text = _transcript("lce_benchmark_model_quicknet_rpi4_crlf.txt")
    text += (
        "ERROR: Node number 12 (LceBconv2d) failed to invoke.\r\nERROR: Benchmarking failed.\r\n"
    )
    with pytest.raises(DeviceError, match=r"Node number 12 \(LceBconv2d\) failed to invoke"):
        parse_benchmark_output(text)
