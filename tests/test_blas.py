"""The row-major gemm bridge against numpy.matmul."""

import itertools

import numpy as np
import pytest

from nnback._blas import gemm_for_tests

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}

# (m, n, k): non-square, one-sized and empty products.
SHAPES = [(3, 5, 4), (7, 2, 9), (1, 6, 1), (5, 1, 3), (0, 4, 3), (4, 0, 3), (4, 3, 0), (0, 0, 0)]

CASES = list(itertools.product([np.float32, np.float64], [False, True], [False, True], SHAPES))


def case_id(case):
    dtype, trans_a, trans_b, (m, n, k) = case
    return f"{dtype.__name__}-{'T' if trans_a else 'N'}{'T' if trans_b else 'N'}-{m}x{n}x{k}"


def stored(matrix, transposed):
    """Return a C-contiguous array that is ``matrix`` under the transpose flag."""
    return np.ascontiguousarray(matrix.T if transposed else matrix)


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (-0.5, 1.0), (2.0, 0.25)])
def test_gemm_matches_matmul(case, alpha, beta):
    dtype, trans_a, trans_b, (m, n, k) = case
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = alpha * (a.astype(np.float64) @ b.astype(np.float64)) + beta * c

    gemm_for_tests(trans_a, trans_b, alpha, stored(a, trans_a), stored(b, trans_b), beta, c)

    np.testing.assert_allclose(c, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_empty_inner_dimension_scales_c(dtype):
    c = np.array([[1.0, -2.0], [3.0, np.inf]], dtype=dtype)
    a = np.empty((2, 0), dtype=dtype)
    b = np.empty((0, 2), dtype=dtype)

    gemm_for_tests(False, False, 1.0, a, b, 0.5, c)

    np.testing.assert_array_equal(c, np.array([[0.5, -1.0], [1.5, np.inf]], dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 3])
def test_gemm_beta_zero_overwrites_nan(dtype, k):
    c = np.full((2, 2), np.nan, dtype=dtype)
    a = np.ones((2, k), dtype=dtype)
    b = np.ones((k, 2), dtype=dtype)

    gemm_for_tests(False, False, 1.0, a, b, 0.0, c)

    np.testing.assert_array_equal(c, np.full((2, 2), k, dtype=dtype))


def test_gemm_leaves_inputs_unchanged():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 3))
    b = rng.standard_normal((3, 5))
    a_before, b_before = a.copy(), b.copy()

    gemm_for_tests(False, False, 1.0, a, b, 0.0, np.zeros((4, 5)))

    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


def test_gemm_accepts_read_only_inputs():
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(12.0).reshape(3, 4)
    a.flags.writeable = False
    b.flags.writeable = False
    c = np.zeros((2, 4))

    gemm_for_tests(False, False, 1.0, a, b, 0.0, c)

    np.testing.assert_array_equal(c, a @ b)


def test_gemm_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="b has shape"):
        gemm_for_tests(False, False, 1.0, np.ones((2, 3)), np.ones((4, 2)), 0.0, np.zeros((2, 2)))
