"""Installs one package, ``melius_larq``.

The repository keeps the library (``melius_larq/``), the training recipes (``zoo/``) and the
deployment tools (``deploy/``) in separate top-level folders; they install as
``melius_larq``, ``melius_larq.zoo`` and ``melius_larq.deploy``.
"""

from pathlib import Path

from setuptools import find_packages, setup


def _packages():
    """``melius_larq`` and its sub-packages, with ``zoo/`` and ``deploy/`` mapped into it."""
    packages = find_packages(include=["melius_larq", "melius_larq.*"])
    for folder in ("zoo", "deploy"):
        packages += [f"melius_larq.{p}" for p in find_packages(include=[folder, f"{folder}.*"])]
    return packages


def _requirements(name):
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-r"))]


setup(
    name="melius_larq",
    version="0.1.0",
    description=(
        "MeliusNet, BNN+ and CBD binary neural networks for Keras/Larq, "
        "deployed with Larq Compute Engine"
    ),
    long_description=(
        Path(__file__).with_name("README.md").read_text()
        if Path(__file__).with_name("README.md").exists()
        else ""
    ),
    long_description_content_type="text/markdown",
    packages=_packages(),
    package_dir={"melius_larq.zoo": "zoo", "melius_larq.deploy": "deploy"},
    package_data={"melius_larq": ["py.typed"]},
    python_requires=">=3.10,<3.13",
    install_requires=_requirements("requirements.txt"),
    extras_require={
        "test": _requirements("requirements-test.txt"),
        "zoo": ["larq-zoo==2.4.0", "protobuf==3.20.3"],
    },
    entry_points={"console_scripts": ["melius-larq=melius_larq.cli:main"]},
    license="Apache-2.0",
    classifiers=["Programming Language :: Python :: 3.11"],
)
