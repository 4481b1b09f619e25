"""Compiled forward and backward passes of the linear layer.

Row-major, batch first, with ``B`` rows, ``n_features`` inputs and ``n_outputs``
outputs::

    forward:   y  = x @ weight + bias      x (B, n_features), weight (n_features, n_outputs)
    backward:  dx = dy @ weight.T          (B, n_features)
               dW = x.T @ dy               (n_features, n_outputs)
               db = dy.sum(axis=0)         (n_outputs,)

The bias is added to every row of y, so each bias entry collects the gradient of
its whole output column: db has one entry per output, summed over the B rows.
Those column sums are accumulated in double precision for float32 too, so their
rounding error does not grow with B as a float32 running sum's does.

The matrix products are single ``gemm`` calls, and the transposes are gemm flags,
never copies. The entry points trust their arguments: ``nnback.functional``
checks shapes, dtypes, layout and aliasing, and rejects dimensions above
2**31 - 1, which BLAS cannot index. Outputs must not overlap inputs.
"""

from cython cimport floating

from nnback._blas cimport gemm


cdef extern from "_fastmath.h" nogil:
    # sums[j] = sum_i x[i * n_columns + j], accumulated in double and vectorized.
    void nnb_sum_columns_f32(const float* x, Py_ssize_t n_rows, Py_ssize_t n_columns,
                             float* sums)


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------


cdef void linear_forward_rows(int n_samples, int n_features, int n_outputs,
                              const floating* x, const floating* weight,
                              const floating* bias, floating* y) noexcept nogil:
    # y = x @ weight + bias. The bias rows are written first and gemm adds the
    # product to them (beta = 1). On one thread of a 2-core x86-64 machine this
    # ran 0-15% faster than a beta = 0 gemm followed by a bias pass for batches
    # of 512 rows and more, and up to 10% slower for 10 outputs.
    cdef Py_ssize_t i, j
    cdef floating* y_row

    if n_samples == 0 or n_outputs == 0:
        return

    if bias == NULL:
        gemm(False, False, n_samples, n_outputs, n_features, 1, x, n_features,
             weight, n_outputs, 0, y, n_outputs)
        return

    for i in range(n_samples):
        y_row = y + i * n_outputs
        for j in range(n_outputs):
            y_row[j] = bias[j]

    # With n_features == 0 gemm leaves y = 1 * y, so every row equals the bias.
    gemm(False, False, n_samples, n_outputs, n_features, 1, x, n_features,
         weight, n_outputs, 1, y, n_outputs)


def forward(const floating[:, ::1] x, const floating[:, ::1] weight,
            const floating[::1] bias, floating[:, ::1] y):
    """Write ``y = x @ weight + bias`` into ``y``, without a bias if ``bias`` is None.

    x (B, n_features), weight (n_features, n_outputs), bias (n_outputs,),
    y (B, n_outputs), all of one dtype. Returns None.
    """
    cdef int n_samples = x.shape[0]
    cdef int n_features = x.shape[1]
    cdef int n_outputs = weight.shape[1]
    cdef const floating* x_data = NULL
    cdef const floating* weight_data = NULL
    cdef const floating* bias_data = NULL

    if n_samples == 0 or n_outputs == 0:
        return

    # An empty view has no element 0, so its pointer stays NULL. gemm reads
    # neither operand when n_features == 0.
    if n_features > 0:
        x_data = &x[0, 0]
        weight_data = &weight[0, 0]
    if bias is not None:
        bias_data = &bias[0]

    with nogil:
        linear_forward_rows(n_samples, n_features, n_outputs,
                            x_data, weight_data, bias_data, &y[0, 0])


# ---------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------


cdef void sum_columns(int n_samples, int n_outputs, const floating* dy,
                      floating* db) noexcept nogil:
    # db[j] = sum_i dy[i, j] in double precision, with inner loops along rows of
    # dy, which are contiguous. An empty batch gives zeros.
    cdef Py_ssize_t i, j
    cdef const floating* dy_row

    if floating is float:
        nnb_sum_columns_f32(dy, n_samples, n_outputs, db)
    else:
        for j in range(n_outputs):
            db[j] = 0
        for i in range(n_samples):
            dy_row = dy + i * n_outputs
            for j in range(n_outputs):
                db[j] += dy_row[j]


cdef void linear_backward_rows(int n_samples, int n_features, int n_outputs,
                               const floating* x, const floating* weight,
                               const floating* dy, floating* dx,
                               floating* dweight, floating* dbias) noexcept nogil:
    # dx and dbias may be NULL, and then are skipped.

    # dx = dy @ weight.T: (B, n_outputs) times the transpose of (n_features, n_outputs).
    # With n_outputs == 0 the inner dimension is empty and gemm writes zeros.
    if dx != NULL:
        gemm(False, True, n_samples, n_features, n_outputs, 1, dy, n_outputs,
             weight, n_outputs, 0, dx, n_features)

    # dW = x.T @ dy: the transpose of (B, n_features) times (B, n_outputs).
    # With B == 0 the inner dimension is empty and gemm writes zeros.
    gemm(True, False, n_features, n_outputs, n_samples, 1, x, n_features,
         dy, n_outputs, 0, dweight, n_outputs)

    if dbias != NULL:
        sum_columns(n_samples, n_outputs, dy, dbias)


def backward(const floating[:, ::1] x, const floating[:, ::1] weight,
             const floating[:, ::1] dy, floating[:, ::1] dx,
             floating[:, ::1] dweight, floating[::1] dbias):
    """Compute ``dx = dy @ weight.T``, ``dweight = x.T @ dy`` and ``dbias = dy.sum(0)``.

    x (B, n_features), weight (n_features, n_outputs), dy (B, n_outputs) are
    read. dx (B, n_features), dweight (n_features, n_outputs) and
    dbias (n_outputs,) are overwritten, and dx and dbias may be None to skip them.
    Returns None.
    """
    cdef int n_samples = x.shape[0]
    cdef int n_features = x.shape[1]
    cdef int n_outputs = weight.shape[1]
    cdef const floating* x_data = NULL
    cdef const floating* weight_data = NULL
    cdef const floating* dy_data = NULL
    cdef floating* dx_data = NULL
    cdef floating* dweight_data = NULL
    cdef floating* dbias_data = NULL

    # Only non-empty views have an element 0. A NULL pointer is never read,
    # because each product or sum that would read it is empty.
    if n_samples > 0 and n_features > 0:
        x_data = &x[0, 0]
    if n_features > 0 and n_outputs > 0:
        weight_data = &weight[0, 0]
        dweight_data = &dweight[0, 0]
    if n_samples > 0 and n_outputs > 0:
        dy_data = &dy[0, 0]
    if dx is not None and n_samples > 0 and n_features > 0:
        dx_data = &dx[0, 0]
    if dbias is not None and n_outputs > 0:
        dbias_data = &dbias[0]

    with nogil:
        linear_backward_rows(n_samples, n_features, n_outputs, x_data, weight_data,
                             dy_data, dx_data, dweight_data, dbias_data)
