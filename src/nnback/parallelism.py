"""Thread counts of the BLAS pools that nnback's matrix products use.

nnback's matrix products run on the OpenBLAS that SciPy ships, and NumPy ships a
second OpenBLAS with a pool of its own. The element-wise kernels run on the
calling thread. These functions set the thread count of every BLAS and OpenMP
pool in the process at once, through threadpoolctl.
"""

import numbers
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

# The BLAS and OpenMP libraries take the thread count as a C int.
MAX_THREADS = 2**31 - 1


def _check_num_threads(n_threads: int) -> int:
    """Return ``n_threads`` as an int after checking that it is an integer in [1, MAX_THREADS]."""
    # numbers.Integral admits NumPy integers such as np.int64(2), but not bool.
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    count = int(n_threads)
    if count < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    if count > MAX_THREADS:
        raise ValueError(f"n_threads must be at most {MAX_THREADS}, got {n_threads}")
    return count


def set_num_threads(n_threads: int) -> None:
    """Set the number of threads of every BLAS and OpenMP pool in the process.

    The setting stays in force until it is changed again. Use ``threads`` to
    change it for a ``with`` block only.

    Parameters
    ----------
    n_threads : int
        Number of threads, >= 1.

    Raises
    ------
    ValueError
        If ``n_threads`` is not a positive integer (a Python or NumPy int).

    Examples
    --------
    >>> import nnback
    >>> nnback.set_num_threads(1)  # doctest: +SKIP
    >>> nnback.set_num_threads(0)
    Traceback (most recent call last):
        ...
    ValueError: n_threads must be a positive integer, got 0
    """
    threadpool_limits(limits=_check_num_threads(n_threads))


def threads(n_threads: int) -> AbstractContextManager[Any]:
    """Return a context manager that limits every BLAS and OpenMP pool to ``n_threads``.

    The previous thread counts come back when the ``with`` block ends.

    Parameters
    ----------
    n_threads : int
        Number of threads inside the block, >= 1.

    Returns
    -------
    threadpoolctl.threadpool_limits
        The context manager. The limit already applies when this function
        returns, so use the result in a ``with`` statement right away.

    Raises
    ------
    ValueError
        If ``n_threads`` is not a positive integer (a Python or NumPy int).

    Examples
    --------
    >>> import numpy as np
    >>> import nnback
    >>> model = nnback.mlp([4, 8, 3], rng=0)
    >>> with nnback.threads(1):
    ...     y = model.predict(np.zeros((2, 4)))
    >>> y.shape
    (2, 3)
    """
    return threadpool_limits(limits=_check_num_threads(n_threads))
