"""Tests of ``nnback.selfcheck`` and the ``nnback check`` command."""

import io
import subprocess
import sys

import numpy as np
import pytest

from nnback import cli, functional, reference, selfcheck


def test_normwise_error_equal_arrays():
    assert selfcheck.normwise_error(np.array([1.0, -2.0]), np.array([1.0, -2.0])) == 0.0


def test_normwise_error_hand_case():
    # max |difference| = 0.5, max |expected| = 2.5
    error = selfcheck.normwise_error(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    assert error == pytest.approx(0.2, rel=1e-15)


def test_normwise_error_matching_nonfinite():
    values = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert selfcheck.normwise_error(values.copy(), values) == 0.0


def test_normwise_error_nan_mismatch():
    assert selfcheck.normwise_error(np.array([np.nan, 1.0]), np.array([0.0, 1.0])) == np.inf
    assert selfcheck.normwise_error(np.array([0.0, 1.0]), np.array([np.nan, 1.0])) == np.inf


def test_normwise_error_shape_mismatch():
    assert selfcheck.normwise_error(np.zeros(3), np.zeros(4)) == np.inf


def test_normwise_error_empty():
    assert selfcheck.normwise_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_normwise_error_scale_bounds_denominator():
    # max |difference| = 1e-16, max |expected| = 1e-15, scale = 1.0
    error = selfcheck.normwise_error(np.array([1.1e-15]), np.array([1e-15]), scale=1.0)
    assert error == pytest.approx(1e-16, rel=1e-6)
    assert selfcheck.normwise_error(np.array([1.0, 2.0]), np.array([1.0, 2.5]), scale=0.1) == pytest.approx(0.2)


@pytest.mark.parametrize("seed", [1, 2, 2**63])
def test_run_passes_with_saturated_single_entry(seed):
    # These seeds draw a single saturated sigmoid or tanh input, whose gradient
    # cancels to almost zero: they failed when the error was relative to it.
    stream = io.StringIO()
    assert selfcheck.run(stream, seed=seed), stream.getvalue()


@pytest.mark.parametrize("seed", [-1, 1.5, "1", None, True], ids=["negative", "float", "str", "none", "bool"])
def test_run_rejects_invalid_seed(seed):
    stream = io.StringIO()
    with pytest.raises(ValueError, match=r"^seed must be an int >= 0, got "):
        selfcheck.run(stream, seed=seed)
    assert stream.getvalue() == ""


def test_result_nan_error_fails():
    assert not selfcheck.Result("x", float("nan"), 1.0, 1).passed
    assert selfcheck.Result("x", 1.0, 1.0, 1).passed


def test_run_passes_on_this_build():
    stream = io.StringIO()
    assert selfcheck.run(stream, verbose=True)
    output = stream.getvalue()
    assert "BLAS and OpenMP libraries loaded:" in output
    assert "FAILED" not in output
    assert "checks passed" in output


def test_run_reports_wrong_kernel(monkeypatch):
    def wrong_tanh(x, *, out=None):
        return reference.tanh_forward(x) + np.asarray(1e-3, dtype=np.asarray(x).dtype)

    monkeypatch.setattr(functional, "tanh_forward", wrong_tanh)
    stream = io.StringIO()
    assert not selfcheck.run(stream)
    output = stream.getvalue()
    assert "FAILED tanh forward and backward, float32" in output
    assert "FAILED tanh forward and backward, float64" in output
    assert "FAILED sigmoid" not in output


def test_run_reports_wrong_gemm(monkeypatch):
    class OffByOneBlas:
        DEBUG_BUILD = False

        @staticmethod
        def gemm_for_tests(trans_a, trans_b, alpha, a, b, beta, c):
            selfcheck_blas.gemm_for_tests(trans_a, trans_b, alpha, a, b, beta, c)
            c[0, 0] += 1

    selfcheck_blas = selfcheck._blas
    monkeypatch.setattr(selfcheck, "_blas", OffByOneBlas)
    stream = io.StringIO()
    assert not selfcheck.run(stream)
    assert "FAILED gemm on small integers (exact), float32" in stream.getvalue()


def test_run_reports_wrong_gradient(monkeypatch):
    def halved_backward(x, weight, dy, *, need_dx=True):
        dx, dweight, dbias = reference.linear_backward(x, weight, dy, need_dx=need_dx)
        return dx, dweight / 2, dbias

    monkeypatch.setattr(functional, "linear_backward", halved_backward)
    stream = io.StringIO()
    assert not selfcheck.run(stream)
    assert "FAILED linear_backward vs finite differences, float64" in stream.getvalue()


def test_check_command_exit_status(capsys):
    assert cli.main(["check", "--threads", "1"]) == 0
    assert "checks passed" in capsys.readouterr().out


def test_check_command_failure_status(monkeypatch, capsys):
    monkeypatch.setattr(functional, "relu_forward", lambda x, *, out=None: np.abs(x))
    assert cli.main(["check"]) == cli.EXIT_FAILURE
    assert "FAILED relu" in capsys.readouterr().out


def test_check_module_entry_point(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "nnback", "check", "--verbose"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "openblas" in completed.stdout.lower()
    assert completed.stdout.count("  ok ") >= 20
