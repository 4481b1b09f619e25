"""Row-major ``gemm`` over ``scipy.linalg.cython_blas``.

``gemm`` computes ``C = alpha * op(A) @ op(B) + beta * C`` for C-contiguous
(row-major) buffers, where ``op(A)`` is ``A`` or ``A.T``. ``C`` has shape
``(m, n)``, ``op(A)`` has shape ``(m, k)`` and ``op(B)`` has shape ``(k, n)``.
The leading dimensions ``lda``, ``ldb`` and ``ldc`` are row strides counted in
elements, of the arrays as they are stored (before ``op``).

BLAS is column-major. A row-major matrix read as column-major is its
transpose, so the row-major product ``C = op(A) op(B)`` is the column-major
product ``C.T = op(B).T op(A).T``: the wrapper swaps the operands and ``m``
with ``n``, and passes the transpose flags through unchanged.
"""

from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from *:
    """
    #ifndef NNBACK_DEBUG_BUILD
    #define NNBACK_DEBUG_BUILD 0
    #endif
    """
    int NNBACK_DEBUG_BUILD

# True when the extension was built with NNBACK_DEBUG=1: Cython's bounds,
# wraparound and initialization checks on, and no optimization.
DEBUG_BUILD = bool(NNBACK_DEBUG_BUILD)


cdef inline int at_least_one(int value) noexcept nogil:
    # BLAS rejects a leading dimension of 0, which an empty matrix would give.
    return value if value > 1 else 1


cdef void scale_rows(int m, int n, floating beta, floating* c, int ldc) noexcept nogil:
    # C = beta * C, with the BLAS rule that beta == 0 overwrites C with zeros
    # even where C holds NaN or infinity.
    cdef int i, j
    for i in range(m):
        for j in range(n):
            if beta == 0:
                c[i * ldc + j] = 0
            else:
                c[i * ldc + j] = beta * c[i * ldc + j]


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* a, int lda,
               const floating* b, int ldb,
               floating beta, floating* c, int ldc) noexcept nogil:
    cdef char flag_a = b'T' if trans_a else b'N'
    cdef char flag_b = b'T' if trans_b else b'N'

    if m <= 0 or n <= 0:
        return
    if k <= 0:
        # An empty inner dimension contributes nothing: the result is beta * C.
        scale_rows(m, n, beta, c, ldc)
        return

    lda = at_least_one(lda)
    ldb = at_least_one(ldb)
    ldc = at_least_one(ldc)

    # BLAS never writes A or B; its prototypes just lack const.
    if floating is float:
        sgemm(&flag_b, &flag_a, &n, &m, &k, &alpha, <float*> b, &ldb,
              <float*> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&flag_b, &flag_a, &n, &m, &k, &alpha, <double*> b, &ldb,
              <double*> a, &lda, &beta, c, &ldc)


def gemm_for_tests(bint trans_a, bint trans_b, double alpha,
                   const floating[:, ::1] a, const floating[:, ::1] b,
                   double beta, floating[:, ::1] c):
    """Compute ``c = alpha * op(a) @ op(b) + beta * c`` in place (test entry point).

    Shapes are checked here only so that a wrong test cannot crash the
    process; the compiled kernels call ``gemm`` directly.
    """
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int a_rows = k if trans_a else m
    cdef int b_rows = n if trans_b else k
    cdef int b_cols = k if trans_b else n
    cdef tuple a_shape = (a.shape[0], a.shape[1])
    cdef tuple b_shape = (b.shape[0], b.shape[1])

    if a.shape[0] != a_rows:
        raise ValueError(f"a has shape {a_shape}, which does not fit c of shape {(m, n)}")
    if b.shape[0] != b_rows or b.shape[1] != b_cols:
        raise ValueError(
            f"b has shape {b_shape}, expected {(b_rows, b_cols)} for a of shape "
            f"{a_shape} and c of shape {(m, n)}"
        )

    cdef const floating* a_data = &a[0, 0] if a.shape[0] * a.shape[1] else NULL
    cdef const floating* b_data = &b[0, 0] if b.shape[0] * b.shape[1] else NULL
    cdef floating* c_data = &c[0, 0] if m * n else NULL

    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating> alpha, a_data, <int> a.shape[1],
             b_data, <int> b.shape[1], <floating> beta, c_data, <int> c.shape[1])
