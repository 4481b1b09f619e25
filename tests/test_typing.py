"""Check the type stubs of the compiled modules and the package's annotations.

stubtest imports the compiled modules and compares every name and signature
with their .pyi stubs, and mypy checks the Python modules against those stubs.
Both run in a subprocess, with the settings of ``[tool.mypy]`` in
pyproject.toml, and the tests skip when mypy is not installed.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed")

ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = Path(__file__).resolve().with_name("stubtest_allowlist.txt")
COMPILED_MODULES = [
    "nnback._blas",
    "nnback._linear",
    "nnback._softmax",
    "nnback._activations",
    "nnback._optim",
    "nnback._network",
]


@pytest.fixture
def mypy_cache_dir(request, tmp_path):
    # pytest's cache directory keeps mypy's incremental cache between runs.
    # Without the cache plugin (-p no:cacheprovider) the attribute is missing.
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return tmp_path
    return cache.mkdir("mypy")


def run_module(*args):
    """Run ``python -m ARGS`` from the repository root and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_stubs_match_compiled_modules():
    result = run_module("mypy.stubtest", "--allowlist", str(ALLOWLIST), *COMPILED_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_source(mypy_cache_dir):
    # The source tree, with the stubs next to the .pyx files, whether nnback
    # is installed from this checkout or not.
    result = run_module("mypy", "--cache-dir", str(mypy_cache_dir), str(ROOT / "src" / "nnback"))
    assert result.returncode == 0, result.stdout + result.stderr
