"""Tests of the installed package: version, shipped files and optional imports."""

import importlib.metadata
import importlib.resources
import subprocess
import sys

import pytest

import nnback

COMPILED_MODULES = ("_activations", "_blas", "_linear", "_network", "_optim", "_softmax")


def test_version_matches_metadata():
    assert nnback.__version__ == importlib.metadata.version("nnback")


def test_package_ships_type_information():
    files = importlib.resources.files("nnback")

    assert files.joinpath("py.typed").is_file()
    for name in COMPILED_MODULES:
        assert files.joinpath(f"{name}.pyi").is_file(), name


def test_estimator_without_scikit_learn_names_it():
    # A None entry in sys.modules makes "import sklearn" raise ImportError.
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"
        "import nnback\n"
        "try:\n"
        "    nnback.MLPClassifier\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert "nnback.MLPClassifier needs scikit-learn" in completed.stdout
    assert "pip install scikit-learn" in completed.stdout


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="not_an_attribute"):
        nnback.not_an_attribute  # noqa: B018
