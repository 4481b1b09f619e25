"""The GEMM floor: the matrix products of one MLP training step, timed alone.

For an MLP with layers ``l = 1..L``, input ``a_0 = x`` and outputs ``a_l`` of
shape (B, n_l), one training step contains these products:

* forward, every layer: ``a_l = a_{l-1} @ W_l``, W_l of shape (n_{l-1}, n_l);
* backward, every layer: ``dW_l = a_{l-1}.T @ da_l``;
* backward, every layer but the first: ``da_{l-1} = da_l @ W_l.T``.

For 784-256-256-10 that is 3 + 3 + 2 = 8 products. A training step can be no
faster than these products on the same BLAS, so their time is the floor that
nnback's step is compared with. Element-wise work (bias, activation, loss,
update) is left out on purpose.

The products go through ``scipy.linalg.blas.sgemm``, the same OpenBLAS that
nnback calls through ``scipy.linalg.cython_blas``. That wrapper is column-major
and copies any input that is not Fortran-ordered, and it allocates its output
unless it gets ``c=`` with ``overwrite_c=1``. A C-ordered (row-major) array's
``.T`` is Fortran-ordered, so each row-major product ``C = A @ B`` runs as the
column-major product ``C.T = B.T @ A.T`` on ``.T`` views, and a transposed
operand becomes a transpose flag. ``verify`` checks that no call copies or
allocates an array.
"""

import math
import tracemalloc

import numpy as np
from scipy.linalg.blas import sgemm


class _Product:
    """One row-major product ``c = op(a) @ op(b)``, stored as the Fortran-ordered call arguments."""

    def __init__(self, label, a, b, c, trans_a, trans_b):
        self.label = label
        self.c = c
        # Row-major c = op(a) @ op(b) is column-major c.T = op(b).T @ op(a).T.
        # op(b).T is b.T when op(b) = b, and b with the transpose flag when op(b) = b.T.
        self.arguments = (b.T, a.T, c.T, trans_b, trans_a)

    def run(self):
        first, second, target, trans_first, trans_second = self.arguments
        return sgemm(1.0, first, second, 0.0, target, trans_first, trans_second, overwrite_c=1)


class GemmFloor:
    """The forward and backward products of an MLP training step on preallocated float32 arrays."""

    def __init__(self, batch_size, layer_sizes, rng):
        activations = [rng.standard_normal((batch_size, layer_sizes[0]), dtype=np.float32)]
        weights = []
        for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
            weights.append(rng.standard_normal((n_in, n_out), dtype=np.float32) / math.sqrt(n_in))
            activations.append(np.empty((batch_size, n_out), dtype=np.float32))
        gradients = [np.empty_like(array) for array in activations]
        gradients[-1][...] = rng.standard_normal(gradients[-1].shape, dtype=np.float32)
        weight_gradients = [np.empty_like(weight) for weight in weights]

        self.products = []
        for layer, weight in enumerate(weights):
            self.products.append(_Product(
                f"forward {layer + 1}", activations[layer], weight, activations[layer + 1], False, False
            ))
        for layer in reversed(range(len(weights))):
            self.products.append(_Product(
                f"dW {layer + 1}", activations[layer], gradients[layer + 1], weight_gradients[layer], True, False
            ))
            if layer > 0:
                self.products.append(_Product(
                    f"dx {layer + 1}", gradients[layer + 1], weights[layer], gradients[layer], False, True
                ))
        # Every buffer that a product reads contains finite values before the first call.
        for array in activations[1:] + gradients[:-1]:
            array[...] = rng.standard_normal(array.shape, dtype=np.float32)

    def run(self):
        for product in self.products:
            product.run()

    def verify(self):
        """Check every product's output buffer, values and allocations, and return what was found.

        Each call must return a view of its preallocated output, match a
        float64 NumPy product, and allocate less than the smallest operand
        would take to copy (tracemalloc peak), which rules out hidden copies.
        """
        checks = []
        smallest_operand = min(
            min(array.nbytes for array in product.arguments[:3]) for product in self.products
        )
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            for product in self.products:
                expected = _expected_product(product)
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                result = product.run()
                peak_bytes = tracemalloc.get_traced_memory()[1] - before
                reused = (
                    result.__array_interface__["data"][0] == product.c.__array_interface__["data"][0]
                    and result.shape == product.c.T.shape
                )
                values_match = bool(np.allclose(product.c, expected, rtol=1e-4, atol=1e-4))
                checks.append({
                    "product": product.label,
                    "output_reused": bool(reused),
                    "values_match": values_match,
                    "peak_bytes": int(peak_bytes),
                    "no_copy": bool(peak_bytes < smallest_operand),
                })
                del result
        finally:
            if not was_tracing:
                tracemalloc.stop()
        return {
            "ok": all(check["output_reused"] and check["values_match"] and check["no_copy"] for check in checks),
            "smallest_operand_bytes": int(smallest_operand),
            "products": checks,
        }


def _expected_product(product):
    first, second, _, trans_first, trans_second = product.arguments
    left = first.T if trans_first else first
    right = second.T if trans_second else second
    # The column-major result c.T, transposed back to the row-major c.
    return (left.astype(np.float64) @ right.astype(np.float64)).T


class CallOverhead:
    """The same number of sgemm calls, with the same arguments and flags, on 1 x 1 matrices.

    Its time per call is the Python and f2py cost of one floor product, which
    the native BLAS calls inside nnback do not pay.
    """

    def __init__(self, floor):
        unit_matrix = np.ones((1, 1), dtype=np.float32, order="F")
        self.calls = [
            (unit_matrix, unit_matrix.copy(order="F"), unit_matrix.copy(order="F"),
             product.arguments[3], product.arguments[4])
            for product in floor.products
        ]

    def run(self):
        for first, second, target, trans_first, trans_second in self.calls:
            sgemm(1.0, first, second, 0.0, target, trans_first, trans_second, overwrite_c=1)
