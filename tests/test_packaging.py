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
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from melius_larq._optional import EXTRAS

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_packaging")

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


# Run by the installed package from a working directory whose own ``deploy`` and ``zoo``
# packages would break any import of those top-level names: imports every module, builds
# MeliusNet22 and converts a small model with LCE.
SMOKE_SCRIPT = """
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


def _foreign_workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    for name in ("deploy", "zoo"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name}')\n")
    return work


def _smoke(python, prefix: Path, work: Path, env: dict) -> None:
    """Runs SMOKE_SCRIPT and ``python -m melius_larq list`` with ``python``, whose
    ``melius_larq`` must come from below ``prefix``."""
    result = subprocess.run(
        [str(python), "-c", SMOKE_SCRIPT, str(prefix)],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    in_checkout = [n for n, _ in _modules() if n != "melius_larq" and not n.endswith("__main__")]
    assert f"\n{len(in_checkout)} modules\n" in f"\n{result.stdout}"
    listed = subprocess.run(
        [str(python), "-m", "melius_larq", "list"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "MeliusNet22" in listed.stdout.split()


@pytest.mark.large  # installs the wheel and runs three TensorFlow processes: ~30 s
def test_wheel_works_outside_the_checkout_beside_foreign_deploy_and_zoo(wheel, tmp_path):
    """Installed without dependencies into a directory, run from a directory whose own
    ``deploy`` and ``zoo`` packages would break any import of those top-level names."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    work = _foreign_workdir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    _smoke(sys.executable, site, work, env)
    script_path = site / "bin" / "melius-larq"
    assert script_path.is_file()
    console = subprocess.run(
        [sys.executable, str(script_path), "list", "MeliusNetTiny"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert console.returncode == 0 and console.stdout.split() == ["MeliusNetTiny"], console.stderr


# --- Dependencies: ranges in the wheel's metadata, exact pins in requirements.txt ---------


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode().splitlines()


def _requires(wheel: Path, extra: str = "") -> list[Requirement]:
    """The Requires-Dist entries of the plain install (``extra=""``) or of one extra only."""
    reqs = [Requirement(ln.split(":", 1)[1]) for ln in _metadata(wheel)
            if ln.startswith("Requires-Dist:")]  # fmt: skip
    plain = [r for r in reqs if not r.marker or r.marker.evaluate({"extra": ""})]
    if not extra:
        return plain
    return [r for r in reqs if r not in plain and r.marker.evaluate({"extra": extra})]


def _pins(path: Path = ROOT / "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _lower_bound(req: Requirement) -> str:
    """The lowest version ``req`` allows, from its one ``>=`` (or ``==``) clause."""
    lows = [s.version for s in req.specifier if s.operator in (">=", "==")]
    assert len(lows) == 1, f"{req}: a range needs exactly one lower bound (>= or ==)"
    assert req.specifier.contains(lows[0]), f"{req}: its lower bound {lows[0]} is excluded"
    return lows[0]


def test_metadata_declares_ranges_that_hold_the_pinned_stack(wheel):
    """Every requirement of the plain install and of the extras is a range with a lower bound
    (no exact pins), and ``requirements.txt`` pins each to a version inside its range."""
    pins = _pins()
    extras = [ln.split(":", 1)[1].strip() for ln in _metadata(wheel)
              if ln.startswith("Provides-Extra:")]  # fmt: skip
    assert {"plots", "datasets"} <= set(extras)
    for extra in ["", "plots", "datasets"]:
        for req in _requires(wheel, extra):
            assert not any(s.operator == "==" for s in req.specifier), f"{req} is a pin"
            _lower_bound(req)
            name = canonicalize_name(req.name)
            assert name in pins, f"requirements.txt does not pin {req.name}"
            assert req.specifier.contains(pins[name]), f"pin {name}=={pins[name]} not in {req}"
    tf_req = {canonicalize_name(r.name): r for r in _requires(wheel)}["tensorflow"]
    assert tf_req.specifier.contains("2.16.1") and not tf_req.specifier.contains("2.17.0")


def test_plots_and_datasets_are_extras_named_by_the_errors(wheel):
    plain = {canonicalize_name(r.name) for r in _requires(wheel)}
    for distribution, extra in EXTRAS.values():
        assert canonicalize_name(distribution) not in plain, f"{distribution} is not optional"
        names = {canonicalize_name(r.name) for r in _requires(wheel, extra)}
        assert canonicalize_name(distribution) in names, f"extra {extra!r} lacks {distribution}"


def test_the_library_imports_and_lists_without_the_extras():
    """Every module imports, and ``list`` runs, with matplotlib and tensorflow-datasets
    unimportable; the functions that need them name the extra to install."""
    names = [name for name, _ in _modules() if not name.endswith("__main__")]
    script = f"""
import importlib, sys
for blocked in {sorted(EXTRAS)!r}:
    sys.modules[blocked] = None  # makes `import blocked` raise ImportError
for name in {names!r}:
    importlib.import_module(name)
from melius_larq._optional import pyplot
from melius_larq.zoo.data import DataError, import_tfds
for call, extra, error in ((pyplot, "plots", ImportError), (import_tfds, "datasets", DataError)):
    try:
        call("This check")
    except error as err:
        assert f"pip install 'melius_larq[{{extra}}]'" in str(err), err
        assert str(err).startswith("This check needs "), err
    else:
        raise AssertionError(f"{{call.__name__}} did not fail")
sys.argv = ["melius-larq", "list", "MeliusNetTiny"]
from melius_larq.cli import main
main()
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["MeliusNetTiny"], result.stdout


def test_wheel_ships_the_license(wheel):
    with zipfile.ZipFile(wheel) as z:
        licenses = [n for n in z.namelist() if ".dist-info/" in n and "LICENSE" in n]
        assert licenses, "the wheel has no LICENSE file"
        assert z.read(licenses[0]).decode() == (ROOT / "LICENSE").read_text()
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "License: Apache-2.0" in _metadata(wheel)


# pip's messages when the index cannot be reached (then the test skips, except in CI).
_OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
            "Max retries exceeded")  # fmt: skip


@pytest.mark.large
def test_wheel_installs_with_its_lowest_dependencies_in_a_fresh_environment(wheel, tmp_path):
    """``pip install`` of the wheel into a new virtual environment, its dependencies resolved
    from the metadata with each requirement held at its lower bound (a constraints file:
    pip has no lowest-version resolution); downloads come from the package index (pip's cache
    is used). The installed package then lists, builds and converts without the extras."""
    bounds = {canonicalize_name(r.name): _lower_bound(r) for r in _requires(wheel)}
    constraints = tmp_path / "lowest.txt"
    constraints.write_text("".join(f"{name}=={v}\n" for name, v in sorted(bounds.items())))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), str(wheel)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if install.returncode != 0:
        offline = any(s in install.stderr for s in _OFFLINE)
        if offline and os.environ.get("CI", "").lower() not in ("true", "1"):
            pytest.skip(f"the package index is not reachable: {install.stderr[-500:]}")
        errors = [ln for ln in install.stderr.splitlines() if not ln.startswith("WARNING: ")]
        pytest.fail("pip install failed:\n" + "\n".join(errors)[-3000:])
    versions = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, sys\n"
         "for n in sys.argv[1:]: print(n, m.version(n))", *bounds],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    installed = dict(line.split() for line in versions.splitlines())
    assert installed == bounds, f"not the lowest versions: {installed} != {bounds}"
    assert subprocess.run([str(python), "-m", "pip", "check"], capture_output=True).returncode == 0
    work = _foreign_workdir(tmp_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    no_extras = "import importlib.util as u; assert not any(map(u.find_spec, {!r}))"
    subprocess.run([str(python), "-c", no_extras.format(sorted(EXTRAS))], check=True, env=env)
    _smoke(python, venv, work, env)
    console = subprocess.run(
        [str(venv / "bin" / "melius-larq"), "list", "MeliusNet22"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert console.returncode == 0 and console.stdout.split() == ["MeliusNet22"], console.stderr
