"""Type stub of the compiled module ``nnback._blas``."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

# Cython's fused type ``floating``. All arrays of one call have the same dtype.
_Float = TypeVar("_Float", np.float32, np.float64)

DEBUG_BUILD: bool

def gemm_for_tests(
    trans_a: bool,
    trans_b: bool,
    alpha: float,
    a: NDArray[_Float],
    b: NDArray[_Float],
    beta: float,
    c: NDArray[_Float],
) -> None: ...
