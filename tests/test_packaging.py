"""One installed name: the wheel holds only ``melius_larq``, works outside the checkout, and
its layers import one way (library <- deploy, zoo <- command line; the experiments import
all of them and nothing imports the experiments)."""

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Repository folder -> the package it installs as.
FOLDERS = {"melius_larq": "melius_larq", "deploy": "melius_larq.deploy", "zoo": "melius_larq.zoo"}


# Package prefix -> layer, most specific first (the experiments live inside the zoo).
LAYERS = {
    "melius_larq.zoo.experiments": "experiments",
    "melius_larq.cli": "cli",
    "melius_larq.deploy": "deploy",
    "melius_larq.zoo": "zoo",
}


def _layer(module: str) -> str:
    if module == "melius_larq.__main__":
        return "cli"
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "library"


# What each layer may import from the package: the library nothing above it, deploy and zoo
# the library only (they are independent of each other), the command line all three, the
# experiments everything; no layer imports the experiments.
ALLOWED = {
    "library": {"library"},
    "deploy": {"library", "deploy"},
    "zoo": {"library", "zoo"},
    "experiments": {"library", "deploy", "zoo", "experiments"},
    "cli": {"library", "deploy", "zoo", "cli"},
}


def _modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "melius_larq" and name.startswith(
                ("melius_larq.deploy", "melius_larq.zoo")
            ):
                continue
            yield name, path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_layers_import_one_way():
    wrong = []
    for name, path in _modules():
        layer = _layer(name)
        for imported in _imports(path):
            if imported.split(".")[0] in ("deploy", "zoo"):
                wrong.append(f"{name} imports the top-level name {imported!r}")
            elif imported.startswith("melius_larq") and _layer(imported) not in ALLOWED[layer]:
                wrong.append(f"{name} ({layer}) imports {imported} ({_layer(imported)})")
    assert not wrong, "\n".join(wrong)


def test_layer_rule_catches_a_planted_import(tmp_path):
    planted = tmp_path / "m.py"
    planted.write_text("from melius_larq.zoo.data import load_fashion_mnist\n")
    assert _layer("melius_larq.deploy.int8") == "deploy"
    assert "melius_larq.zoo.data" in set(_imports(planted))
    assert _layer("melius_larq.zoo.data") not in ALLOWED["deploy"]
    planted.write_text("from melius_larq.zoo.experiments.cbd import run\n")
    assert _layer("melius_larq.zoo.sweep") == "zoo"
    assert _layer("melius_larq.zoo.experiments.cbd") == "experiments"
    assert "melius_larq.zoo.experiments.cbd" in set(_imports(planted))
    assert not any("experiments" in ALLOWED[layer] for layer in ("library", "deploy", "zoo", "cli"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy of the checkout's files: setuptools reuses a ``build/`` folder, which
    # may hold modules that no longer exist.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, source / rel)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (path,) = out.glob("melius_larq-*.whl")
    return path


def test_wheel_installs_one_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"melius_larq"}
    expected = {f"{pkg.replace('.', '/')}/{p}" for pkg, p in (
        ("melius_larq.deploy", "convert.py"), ("melius_larq.zoo", "train.py"),
        ("melius_larq.zoo.experiments", "__init__.py"),
        ("melius_larq.cli", "__init__.py"), ("melius_larq", "__main__.py"),
    )}  # fmt: skip
    assert expected <= set(names)


def test_wheel_works_outside_the_checkout_beside_foreign_deploy_and_zoo(wheel, tmp_path):
    """Installed without dependencies into a directory, run from a directory whose own
    ``deploy`` and ``zoo`` packages would break any import of those top-level names."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    work = tmp_path / "work"
    for name in ("deploy", "zoo"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name}')\n")
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = """
import importlib, pkgutil, sys
import melius_larq
assert melius_larq.__file__.startswith(sys.argv[1]), melius_larq.__file__
names = [m.name for m in pkgutil.walk_packages(melius_larq.__path__, "melius_larq.")
         if not m.name.endswith("__main__")]
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)
assert "deploy" not in sys.modules and "zoo" not in sys.modules
print(len(names), "modules")
import tensorflow as tf
from melius_larq.deploy import convert_model, op_inventory
model = melius_larq.MeliusNet22(input_shape=(32, 32, 3), num_classes=4)
ops = op_inventory(convert_model(melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10)))
assert ops["LceBconv2d"] > 0, ops
print("converted", dict(ops))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    in_checkout = [n for n, _ in _modules() if n != "melius_larq" and not n.endswith("__main__")]
    assert f"\n{len(in_checkout)} modules\n" in f"\n{result.stdout}"
    listed = subprocess.run(
        [sys.executable, "-m", "melius_larq", "list"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "MeliusNet22" in listed.stdout.split()
    script_path = site / "bin" / "melius-larq"
    assert script_path.is_file()
    console = subprocess.run(
        [sys.executable, str(script_path), "list", "MeliusNetTiny"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert console.returncode == 0 and console.stdout.split() == ["MeliusNetTiny"], console.stderr
