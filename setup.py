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


# What the library needs, as ranges: ``pip install melius_larq`` keeps a user's own versions
# inside them. ``requirements.txt`` pins one tested point of these ranges for ``make setup``.
# Larq Compute Engine 0.16 is built against TensorFlow 2.16 (its converter links TensorFlow's
# MLIR), so the stack is held on the TensorFlow 2.16 line; tf-keras 2.16 itself requires the
# ``tensorflow`` distribution (not ``tensorflow-cpu``), see README.md "Install".
INSTALL_REQUIRES = [
    "tensorflow>=2.16.1,<2.17",
    "tf-keras>=2.16.0,<2.17",
    "larq>=0.14.0,<0.15",
    "larq-compute-engine>=0.16.0,<0.17",
    "numpy>=1.26.0,<2",
    "h5py>=3.10.0",
    "flatbuffers>=23.5.26",
    "tqdm>=4.60.0",
    "pillow>=9.3.0",
]

# Optional parts: the library imports these only where they are used and otherwise names
# the extra to install (melius_larq/_optional.py).
EXTRAS = {
    "plots": ["matplotlib>=3.8.0"],
    "datasets": ["tensorflow-datasets>=4.8.3"],
    # larq-zoo is a benchmark peer only (``make bench``); it needs protobuf < 3.21.
    "zoo": ["larq-zoo>=2.4.0,<2.5", "protobuf>=3.20.3,<3.21"],
}
EXTRAS["all"] = EXTRAS["plots"] + EXTRAS["datasets"]


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
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["melius-larq=melius_larq.cli:main"]},
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=["Programming Language :: Python :: 3.11"],
)
