"""``convert``, ``report``, ``verify``, ``bench``, ``device-bench``: deployment with LCE."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from melius_larq.cli._args import (
    fraction,
    int_list,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["add_subcommands"]


def _load_keras(source: str, input_size: int | None, num_classes: int | None):
    """A Keras model from a registry name or a .keras/.h5/SavedModel path."""
    from melius_larq.deploy.convert import load_keras_model

    return load_keras_model(source, input_size=input_size, num_classes=num_classes)


def load_calibration(source: str | None, model, *, limit: int = 500, labels: bool = False):
    """Calibration inputs for int8 conversion from a dataset name, an image folder or a
    ``.npy`` file.

    Args:
        source: ``fashion_mnist`` or ``cifar10`` (their first training images), a folder of
            images with one sub-folder per class (its training images, resized to the
            model's input; see ``melius_larq.zoo.folder``) or the path of a ``.npy`` file of
            inputs preprocessed as the model expects them.
        model: the Keras model; its input shape is checked against the data.
        limit: at most this many inputs.
        labels: return ``(images, labels)`` (for quantization-aware fine-tuning); a ``.npy``
            file has no labels.

    Raises:
        ValueError: no source, a missing file, inputs whose shape the model does not take,
            or labels asked of a ``.npy`` file.
    """
    import os

    import numpy as np

    if not source:
        raise ValueError(
            "--int8 needs calibration data: --calibration fashion_mnist|cifar10|FOLDER|inputs.npy"
        )
    if source.endswith(".npy"):
        if labels:
            raise ValueError(
                f"--qat-epochs needs labelled images, which {source!r} lacks: pass "
                "--calibration fashion_mnist|cifar10|FOLDER."
            )
        if not os.path.isfile(source):
            raise ValueError(f"Calibration file {source!r} does not exist.")
        x = np.load(source)[:limit].astype(np.float32)
        if x.shape[1:] != tuple(model.input_shape[1:]):
            raise ValueError(
                f"Calibration inputs have shape {x.shape[1:]}, the model expects "
                f"{tuple(model.input_shape[1:])}."
            )
        return x
    if os.path.isdir(source):
        from melius_larq.zoo.folder import folder_images

        height, _, channels = model.input_shape[1:]
        x, y = folder_images(source, image_size=height, channels=channels, limit=limit)
        return (x, y) if labels else x
    from melius_larq.zoo.data import dataset_inputs

    return dataset_inputs(source, model.input_shape[1:], limit=limit, split="train",
                          with_labels=labels)  # fmt: skip


def _write_json(data: dict, path: str | None) -> None:
    if path:
        from melius_larq.deploy.convert import write_atomic

        write_atomic((json.dumps(data, indent=2) + "\n").encode(), path)
        print(f"wrote {path}")


def _cmd_convert(args) -> int:
    from melius_larq.deploy.convert import convert_model, write_atomic
    from melius_larq.deploy.report import conversion_report, format_report

    out_dir = Path(args.output).parent
    if not out_dir.is_dir():
        raise OSError(f"Cannot write {args.output!r}: directory {str(out_dir)!r} does not exist.")
    for flag in ("qat_epochs", "int8_io", "lce_int8_outputs"):  # options of --int8 only
        value = getattr(args, flag)
        if value and not args.int8:
            shown = "" if value is True else f" {value}"
            raise ValueError(f"--{flag.replace('_', '-')}{shown} needs --int8.")
    model = _load_keras(args.model, args.input_size, args.num_classes)
    input_shape = (
        (args.input_size, args.input_size, model.input_shape[-1]) if args.input_size else None
    )
    if args.int8:
        from melius_larq.deploy.int8 import convert_int8

        calibration = load_calibration(args.calibration, model, limit=args.calibration_samples)
        qat = {}
        if args.qat_epochs:
            data = load_calibration(args.calibration, model, limit=args.qat_samples, labels=True)
            qat = {"qat_data": data, "qat_epochs": args.qat_epochs, "verbose": 2}
        buf = convert_int8(model, calibration, target=args.target, int8_io=args.int8_io,
                           bconv_float_outputs=not args.lce_int8_outputs, **qat)  # fmt: skip
    elif args.int8_weights:
        from melius_larq.deploy.int8 import convert_int8_weights

        buf = convert_int8_weights(model, target=args.target)
    else:
        buf = convert_model(model, target=args.target, input_shape=input_shape)
    report = conversion_report(buf, keras_model=model, target=args.target)
    path = write_atomic(buf, args.output)
    print(format_report(report))
    print(f"wrote {path} ({len(buf) / 2**20:.3f} MiB)")
    _write_json(report, args.json)
    return 0


def _cmd_report(args) -> int:
    from melius_larq.deploy.report import conversion_report, format_report

    if not args.keras and (args.input_size or args.num_classes):
        raise ValueError("--input-size and --num-classes describe the --keras model; pass --keras.")
    keras_model = _load_keras(args.keras, args.input_size, args.num_classes) if args.keras else None
    report = conversion_report(args.tflite, keras_model=keras_model, target=args.target)
    print(format_report(report))
    _write_json(report, args.json)
    return 0


def _verification_inputs(args, model):
    """``(inputs, labels)``; labels are None for random inputs."""
    import numpy as np

    if args.data == "random":
        rng = np.random.RandomState(args.seed)
        x = rng.uniform(-1, 1, (args.samples, *model.input_shape[1:])).astype(np.float32)
        return x, None
    from melius_larq.zoo.data import dataset_inputs
    from melius_larq.zoo.folder import folder_images, is_image_folder

    if is_image_folder(args.data):
        height, _, channels = model.input_shape[1:]
        return folder_images(args.data, image_size=height, channels=channels, split="test",
                             limit=args.samples)  # fmt: skip

    return dataset_inputs(
        args.data, model.input_shape[1:], limit=args.samples, data_dir=args.data_dir,
        with_labels=True,
    )  # fmt: skip


def _verify_data(value: str) -> str:
    """``--data`` of ``verify``: ``random``, a dataset name or a folder of images."""
    import argparse

    from melius_larq.zoo.data import INPUT_DATASETS
    from melius_larq.zoo.folder import is_image_folder

    if value in ("random", *INPUT_DATASETS) or is_image_folder(value):
        return value
    raise argparse.ArgumentTypeError(
        f"expected random, {', '.join(INPUT_DATASETS)} or a folder of images with one "
        f"sub-folder per class, got {value!r}"
    )


def _cmd_verify(args) -> int:
    from melius_larq.deploy.verify import verify_flatbuffer

    model = _load_keras(args.keras, args.input_size, args.num_classes)
    x, labels = _verification_inputs(args, model)
    result = verify_flatbuffer(
        args.tflite, model, x, min_agreement=args.min_agreement, max_abs_diff=args.max_abs_diff,
        progress=True, labels=labels,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    _write_json(result, args.json)
    if not result["passed"]:
        print("verification FAILED", file=sys.stderr)
        return 1
    return 0


# The smallest input height/width Keras builds MobileNet-v1 for.
MOBILENET_MIN_SIZE = 32
# --xnnpack: which settings of the interpreter's XNNPACK delegate (float layers) to time.
_XNNPACK = {"off": (False,), "on": (True,), "both": (False, True)}


def _mobilenet_shape(tflite: str) -> tuple[int, ...]:
    """The flatbuffer's input shape, for which ``--mobilenet`` builds MobileNet-v1."""
    from melius_larq.deploy.flatbuffer import input_shape

    shape = input_shape(tflite)
    if len(shape) != 3 or min(shape[:2]) < MOBILENET_MIN_SIZE:
        raise ValueError(
            f"--mobilenet needs inputs of at least {MOBILENET_MIN_SIZE}x{MOBILENET_MIN_SIZE}, "
            f"but {tflite!r} takes {'x'.join(map(str, shape))}."
        )
    return shape


def _cmd_bench(args) -> int:
    from melius_larq.deploy.bench import (
        benchmark_lce,
        benchmark_tflite_float,
        float_tflite,
        format_markdown,
        machine_info,
    )
    from melius_larq.deploy.flatbuffer import load_flatbuffer

    name = Path(args.tflite).stem
    load_flatbuffer(args.tflite)
    floats = {}  # bad input fails here, before anything is timed
    if args.keras:
        model = _load_keras(args.keras, args.input_size, args.num_classes)
        floats[f"{name} (float)", name] = float_tflite(model)
    if args.mobilenet:
        from melius_larq._compat import tf

        shape = _mobilenet_shape(args.tflite)
        mobilenet = tf.keras.applications.MobileNet(weights=None, input_shape=shape)
        floats["MobileNet-v1 1.0", "mobilenet"] = float_tflite(mobilenet)
    rows = []

    def add(model, runtime, results):
        for n, stats in results.items():
            rows.append({"model": model, "runtime": runtime, "threads": n, **stats})

    bench = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup}
    for use_xnnpack in _XNNPACK[args.xnnpack]:
        runtime = "LCE (indirect BGEMM + XNNPACK)" if use_xnnpack else "LCE (indirect BGEMM)"
        add(name, runtime, benchmark_lce(args.tflite, use_xnnpack=use_xnnpack, **bench,
                                         progress=f"{name} xnnpack={use_xnnpack}"))  # fmt: skip
    for (model, progress), buf in floats.items():
        add(model, "TFLite float (XNNPACK)",
            benchmark_tflite_float(buf, **bench, progress=f"{progress} float"))  # fmt: skip
    report = {"machine": machine_info(), "rows": rows}
    table = format_markdown(rows, reference=name)
    print(table)
    _write_json(report, args.json)
    if args.markdown:
        from melius_larq.deploy.convert import write_atomic

        write_atomic((table + "\n").encode(), args.markdown)
    return 0


def _cmd_device_bench(args) -> int:
    from melius_larq.deploy.bench import format_markdown
    from melius_larq.deploy.device import run_device_benchmark

    for flag, transport in (("serial", "adb"), ("host", "ssh")):
        if getattr(args, flag) and args.transport != transport:
            raise ValueError(f"--{flag} applies to --transport {transport}, not {args.transport}.")
    result = run_device_benchmark(
        args.tflite, binary=args.binary, transport=args.transport, host=args.host,
        serial=args.serial, threads=args.threads,
        num_runs=args.runs, warmup_runs=args.warmup, op_profiling=not args.no_profile,
        xnnpack=_XNNPACK[args.xnnpack],
        adb=args.adb, ssh=args.ssh, scp=args.scp,
    )  # fmt: skip
    rows = [{**r, "median_ms": r["avg_ms"], "p90_ms": r["max_ms"]} for r in result["rows"]]
    print(f"device: {result['device']} via {result['transport']}")
    print(format_markdown(rows).replace("median ms", "avg ms").replace("p90 ms", "max ms"))
    for row in result["rows"]:
        top = sorted(row["by_node_type"], key=lambda r: -r.get("avg ms", 0))[:5]
        if top:
            print(f"\n{row['model']} x{row['threads']}: time by op type")
            for r in top:
                print(f"  {r['Node type']:>16} {r['avg ms']:8.3f} ms  ({r['avg %']:.1f} %)")
    _write_json(result, args.json)
    return 0


def add_subcommands(sub) -> None:
    """Adds the deployment sub-commands to an argparse sub-parser collection."""
    from melius_larq.deploy.convert import TARGETS

    p = sub.add_parser("convert", help="convert a Keras model to an LCE flatbuffer")
    p.add_argument("model", help="registry name, .keras/.h5 file or SavedModel directory")
    p.add_argument("-o", "--output", required=True, help="output .tflite path")
    p.add_argument("--target", default="arm", choices=list(TARGETS))
    p.add_argument(
        "--input-size", type=positive_int, help="input height/width (registry models: 224)"
    )
    p.add_argument("--num-classes", type=positive_int, help="classes of a registry model (1000)")
    p.add_argument(
        "--int8", action="store_true", help="int8 non-binary layers (needs --calibration)"
    )
    p.add_argument("--int8-io", action="store_true", help="int8 input and output tensors too")
    p.add_argument("--lce-int8-outputs", action="store_true",
                   help="with --int8: binary convs write int8 with LCE's own kernel instead of "
                   "float32 + QUANTIZE (faster on x86); time both on aarch64")  # fmt: skip
    p.add_argument("--int8-weights", action="store_true",
                   help="store float weights as int8 + DEQUANTIZE, compute in float (no calibration)")  # fmt: skip
    p.add_argument(
        "--calibration",
        help="calibration data: a dataset name (fashion_mnist, cifar10; training images), a "
        "folder of images with one sub-folder per class, or a .npy file of preprocessed inputs",
    )
    p.add_argument("--calibration-samples", type=positive_int, default=500)
    p.add_argument("--qat-epochs", type=non_negative_int, default=0,
                   help="with --int8: quantization-aware fine-tuning epochs on labelled "
                   "--calibration images (a dataset name or a folder)")  # fmt: skip
    p.add_argument("--qat-samples", type=positive_int, default=16384,
                   help="training images for --qat-epochs")  # fmt: skip
    p.add_argument("--json", help="also write the conversion report as JSON")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("report", help="op inventory and sizes of a flatbuffer")
    p.add_argument("tflite")
    p.add_argument("--keras", help="the Keras model it came from (lists layers that stayed float)")
    p.add_argument("--input-size", type=positive_int,
                   help="input height/width of a registry --keras model (224)")  # fmt: skip
    p.add_argument("--num-classes", type=positive_int,
                   help="classes of a registry --keras model (1000)")  # fmt: skip
    p.add_argument("--target", default="arm", choices=list(TARGETS))
    p.add_argument("--json", help="write the report as JSON")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("verify", help="compare the LCE interpreter with Keras")
    p.add_argument("tflite")
    p.add_argument("--keras", required=True, help="registry name or model path")
    p.add_argument("--input-size", type=positive_int)
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--data", default="random", type=_verify_data,
                   help="random inputs, a dataset's test images or the test split of a folder "
                   "of images (FOLDER/test/<class>/)")  # fmt: skip
    p.add_argument("--data-dir", help="directory with the dataset files")
    p.add_argument("--samples", type=positive_int, default=100)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--min-agreement", type=fraction, default=0.999, help="top-1 agreement to pass")
    p.add_argument(
        "--max-abs-diff", type=positive_float, help="also fail above this output difference"
    )
    p.add_argument("--json")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bench", help="host latency of a flatbuffer (LCE interpreter)")
    p.add_argument("tflite")
    p.add_argument("--threads", type=int_list, default="1,2", help="comma-separated thread counts")
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--warmup", type=non_negative_int, default=3)
    p.add_argument("--keras", help="also time the float TFLite of this Keras model")
    p.add_argument("--input-size", type=positive_int)
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--mobilenet", action="store_true", help="also time float MobileNet-v1 1.0")
    p.add_argument("--xnnpack", default="both", choices=list(_XNNPACK),
                   help="time LCE with XNNPACK for the float layers off, on or both (both)")  # fmt: skip
    p.add_argument("--json")
    p.add_argument("--markdown")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("device-bench", help="run lce_benchmark_model on a phone or ARM64 board")
    p.add_argument("tflite", nargs="+")
    p.add_argument("--binary", required=True, help="lce_benchmark_model built for the device")
    p.add_argument("--transport", default="adb", choices=["adb", "ssh"])
    p.add_argument("--host", help="ssh destination user@board")
    p.add_argument("--serial", help="adb device serial")
    p.add_argument("--threads", type=int_list, default="1,4", help="comma-separated thread counts")
    p.add_argument("--runs", type=positive_int, default=50)
    p.add_argument("--warmup", type=non_negative_int, default=5)
    p.add_argument("--no-profile", action="store_true", help="skip --enable_op_profiling")
    p.add_argument("--xnnpack", default="on", choices=list(_XNNPACK),
                   help="--use_xnnpack of lce_benchmark_model: off, on (default) or both")  # fmt: skip
    p.add_argument("--adb", default="adb")
    p.add_argument("--ssh", default="ssh")
    p.add_argument("--scp", default="scp")
    p.add_argument("--json")
    p.set_defaults(func=_cmd_device_bench)
