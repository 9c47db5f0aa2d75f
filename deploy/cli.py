"""Sub-commands of ``melius-larq`` for deployment: convert, report, verify, bench, demo."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_subcommands"]


def _load_keras(source: str, input_size: int | None, num_classes: int | None):
    """A Keras model from a registry name or a .keras/.h5/SavedModel path."""
    from deploy.convert import load_keras_model

    return load_keras_model(source, input_size=input_size, num_classes=num_classes)


def _cmd_demo(args) -> int:
    import numpy as np

    import melius_larq
    from deploy.convert import convert_model, write_atomic
    from deploy.report import conversion_report, format_report
    from deploy.verify import verify_flatbuffer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = melius_larq.create_model(args.model, input_shape=(args.input_size,) * 2 + (3,))
    print(f"== {args.model}: accounting at {args.input_size}x{args.input_size} ==")
    melius_larq.summary(model)
    print("\n== LCE conversion ==")
    buf = convert_model(model)
    path = write_atomic(buf, out / f"{args.model.lower()}.tflite")
    report = conversion_report(buf, keras_model=model)
    print(format_report(report))
    print(f"wrote {path}")
    print("\n== Keras vs LCE on random inputs ==")
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (args.samples, *model.input_shape[1:])).astype(np.float32)
    result = verify_flatbuffer(buf, model, x)
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


def add_subcommands(sub) -> None:
    """Adds the deployment sub-commands to an argparse sub-parser collection."""
    p = sub.add_parser("demo", help="build, account, convert and verify a model")
    p.add_argument("--model", default="MeliusNet22")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--samples", type=int, default=8, help="random inputs to verify on")
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.set_defaults(func=_cmd_demo)
