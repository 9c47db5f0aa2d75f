"""One run of the `make demo` recipe sweep (README, "make demo"): the recipe with overrides.

    python docs/demo_sweep/run.py TAG [--valid-pool] key=value ...

trains ``meliusnettiny_fashion_mnist`` with the overrides into ``runs/demo_sweep/TAG`` and
appends the tag, overrides, test top-1, validation top-1 per epoch and seconds to
``docs/demo_sweep/results.jsonl``. ``--valid-pool`` trains MeliusNetTiny with the authors'
"valid" transition pooling instead of its "same" pooling.
"""

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

from melius_larq import models, registry
from melius_larq.zoo.recipes import apply_overrides, get_recipe
from melius_larq.zoo.train import train

parser = argparse.ArgumentParser()
parser.add_argument("tag")
parser.add_argument("--valid-pool", action="store_true")
parser.add_argument("overrides", nargs="*")
args = parser.parse_intermixed_args()
overrides = list(args.overrides)
if args.valid_pool:
    spec = dataclasses.replace(models.VARIANTS["MeliusNetTiny"], name="MeliusNetTinyValidPool",
                               pool_padding=None)  # fmt: skip
    models.VARIANTS[spec.name] = spec
    registry._BUILDERS[spec.name] = registry._make_builder(spec)
    overrides.append(f"model={spec.name}")
recipe = apply_overrides(get_recipe("meliusnettiny_fashion_mnist"), overrides)
out = Path("runs/demo_sweep") / args.tag
start = time.perf_counter()
result = train(recipe, out, verbose=2)
with open(out / "history.csv") as f:
    val = [round(100 * float(row["val_accuracy"]), 2) for row in csv.DictReader(f)]
record = {"tag": args.tag, "valid_pool": args.valid_pool, "overrides": args.overrides,
          "test": round(100 * result["test_accuracy"], 2), "val": val,
          "seconds": round(time.perf_counter() - start)}  # fmt: skip
print(json.dumps(record))
with open(Path(__file__).with_name("results.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
