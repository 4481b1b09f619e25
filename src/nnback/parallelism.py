"""Thread counts of the BLAS pools that nnback's matrix products use.

nnback's matrix products run on the OpenBLAS that SciPy ships, and NumPy ships a
second OpenBLAS with a pool of its own. The element-wise kernels run on the
calling thread. These functions set the thread count of every BLAS and OpenMP
pool in the process at once, through threadpoolctl.
"""

from threadpoolctl import threadpool_limits


def _check_num_threads(n_threads):
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")


def set_num_threads(n_threads):
    """Set the number of threads of every BLAS and OpenMP pool in the process.

    The setting stays in force until it is changed again. Use ``threads`` to
    change it for a ``with`` block only.
    """
    _check_num_threads(n_threads)
    threadpool_limits(limits=n_threads)


def threads(n_threads):
    """Return a context manager that limits every BLAS and OpenMP pool to ``n_threads``.

    The previous thread counts come back when the ``with`` block ends::

        with nnback.threads(1):
            model.forward(x)
    """
    _check_num_threads(n_threads)
    return threadpool_limits(limits=n_threads)
