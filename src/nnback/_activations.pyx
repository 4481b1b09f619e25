"""Compiled sigmoid, tanh and ReLU kernels, forward and backward.

Every function takes flat C-contiguous float32 or float64 memoryviews of one
length n, writes its output in place and returns None::

    sigmoid_forward(x, y)          y = 1 / (1 + exp(-x))
    sigmoid_backward(y, dy, dx)    dx = dy * y * (1 - y)
    tanh_forward(x, y)             y = tanh(x)
    tanh_backward(y, dy, dx)       dx = dy * (1 - y * y)
    relu_forward(x, y)             y = x if x > 0, 0 if x <= 0, NaN if x is NaN
    relu_backward(y, dy, dx)       dx = dy * m, m = 1 if y > 0, 0 if y <= 0, NaN if y is NaN

The backward functions take the forward output y, not x. nnback.functional
validates and allocates. This module trusts dtypes and layout, and checks only
what would corrupt memory: lengths must match, and an output may be the same
buffer as an input but must not partially overlap one.

Numerical notes:

- Sigmoid sign branch: with e = exp(-|x|) <= 1, sigmoid is 1 / (1 + e) for
  x >= 0 and e / (1 + e) for x < 0, so no intermediate overflows for any x and
  sigmoid(-inf) = 0, sigmoid(+inf) = 1. Both branches are computed with a
  select, so the loop vectorizes.
- tanh is computed from e^(-2|x|) - 1 with the sign of x, accurate near 0.
- ReLU subgradient: the derivative at y = 0 is taken as 0.
- Backward as products: NaN or inf in y or dy reaches dx as IEEE multiplication
  says, for example relu_backward gives NaN where y <= 0 and dy is +-inf.
- exp, sigmoid and tanh come from _fastmath.h, which documents their method
  and measured accuracy: at most 1.05 ulp for exp, 2.41 (float32) and 2.17
  (float64) ulp for sigmoid, and 2.50 and 2.53 ulp for tanh.

Threads: the kernels run on the calling thread with the GIL released, so
several Python threads may call them at once. They do not use OpenMP. Measured
on a 2-core x86-64 VM with GCC 12's libgomp, two threads made forward +
backward on 2^24 float32 elements 1.2 to 1.5x faster. But after every parallel
loop the idle worker kept spinning for about 8 ms, which made a loop of 2-thread
OpenBLAS sgemm + sigmoid about 3x slower, and a child forked after a parallel
loop hung in its own first parallel loop.
"""

from cython cimport floating


cdef extern from "_fastmath.h" nogil:
    void nnb_exp_f32(const float *x, float *y, Py_ssize_t n)
    void nnb_exp_f64(const double *x, double *y, Py_ssize_t n)
    void nnb_sigmoid_forward_f32(const float *x, float *y, Py_ssize_t n)
    void nnb_sigmoid_forward_f64(const double *x, double *y, Py_ssize_t n)
    void nnb_sigmoid_backward_f32(const float *y, const float *dy, float *dx, Py_ssize_t n)
    void nnb_sigmoid_backward_f64(const double *y, const double *dy, double *dx, Py_ssize_t n)
    void nnb_tanh_forward_f32(const float *x, float *y, Py_ssize_t n)
    void nnb_tanh_forward_f64(const double *x, double *y, Py_ssize_t n)
    void nnb_tanh_backward_f32(const float *y, const float *dy, float *dx, Py_ssize_t n)
    void nnb_tanh_backward_f64(const double *y, const double *dy, double *dx, Py_ssize_t n)
    void nnb_relu_forward_f32(const float *x, float *y, Py_ssize_t n)
    void nnb_relu_forward_f64(const double *x, double *y, Py_ssize_t n)
    void nnb_relu_backward_f32(const float *y, const float *dy, float *dx, Py_ssize_t n)
    void nnb_relu_backward_f64(const double *y, const double *dy, double *dx, Py_ssize_t n)


# ---- validation ------------------------------------------------------------------


cdef check_length(str name, Py_ssize_t length, Py_ssize_t expected):
    if length != expected:
        raise ValueError(
            f"{name} has {length} elements, expected {expected} like the input"
        )


cdef check_overlap(str out_name, const void *out, str in_name, const void *inp,
                   Py_ssize_t n_bytes):
    # An output equal to an input is fine (every element is read before it is
    # written), but a shifted overlap would let vector stores clobber unread input.
    cdef size_t out_start = <size_t>out
    cdef size_t in_start = <size_t>inp
    if out_start != in_start and out_start < in_start + <size_t>n_bytes \
            and in_start < out_start + <size_t>n_bytes:
        raise ValueError(
            f"{out_name} partially overlaps {in_name}. Pass {in_name} itself "
            f"or an array that shares no memory with it"
        )


cdef check_unary(const floating[::1] x, floating[::1] y, str x_name, str y_name):
    cdef Py_ssize_t n = x.shape[0]
    check_length(y_name, y.shape[0], n)
    if n > 0:
        check_overlap(y_name, &y[0], x_name, &x[0], n * sizeof(floating))


cdef check_binary(const floating[::1] y, const floating[::1] dy, floating[::1] dx):
    cdef Py_ssize_t n = y.shape[0]
    check_length("dy", dy.shape[0], n)
    check_length("dx", dx.shape[0], n)
    if n > 0:
        check_overlap("dx", &dx[0], "y", &y[0], n * sizeof(floating))
        check_overlap("dx", &dx[0], "dy", &dy[0], n * sizeof(floating))


# ---- kernels ------------------------------------------------------------------------


def sigmoid_forward(const floating[::1] x, floating[::1] y):
    """Write y = 1 / (1 + exp(-x)), computed without overflow for any x."""
    cdef Py_ssize_t n = x.shape[0]
    check_unary(x, y, "x", "y")
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_sigmoid_forward_f32(&x[0], &y[0], n)
        else:
            nnb_sigmoid_forward_f64(&x[0], &y[0], n)


def sigmoid_backward(const floating[::1] y, const floating[::1] dy, floating[::1] dx):
    """Write dx = dy * y * (1 - y), where y is the sigmoid forward output."""
    cdef Py_ssize_t n = y.shape[0]
    check_binary(y, dy, dx)
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_sigmoid_backward_f32(&y[0], &dy[0], &dx[0], n)
        else:
            nnb_sigmoid_backward_f64(&y[0], &dy[0], &dx[0], n)


def tanh_forward(const floating[::1] x, floating[::1] y):
    """Write y = tanh(x), with tanh(+-inf) = +-1."""
    cdef Py_ssize_t n = x.shape[0]
    check_unary(x, y, "x", "y")
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_tanh_forward_f32(&x[0], &y[0], n)
        else:
            nnb_tanh_forward_f64(&x[0], &y[0], n)


def tanh_backward(const floating[::1] y, const floating[::1] dy, floating[::1] dx):
    """Write dx = dy * (1 - y * y), where y is the tanh forward output."""
    cdef Py_ssize_t n = y.shape[0]
    check_binary(y, dy, dx)
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_tanh_backward_f32(&y[0], &dy[0], &dx[0], n)
        else:
            nnb_tanh_backward_f64(&y[0], &dy[0], &dx[0], n)


def relu_forward(const floating[::1] x, floating[::1] y):
    """Write y = x where x > 0 and 0 where x <= 0, keeping NaN as NaN."""
    cdef Py_ssize_t n = x.shape[0]
    check_unary(x, y, "x", "y")
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_relu_forward_f32(&x[0], &y[0], n)
        else:
            nnb_relu_forward_f64(&x[0], &y[0], n)


def relu_backward(const floating[::1] y, const floating[::1] dy, floating[::1] dx):
    """Write dx = dy * m with m = 1 where y > 0, 0 where y <= 0, NaN where y is NaN."""
    cdef Py_ssize_t n = y.shape[0]
    check_binary(y, dy, dx)
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_relu_backward_f32(&y[0], &dy[0], &dx[0], n)
        else:
            nnb_relu_backward_f64(&y[0], &dy[0], &dx[0], n)


def exp_for_tests(const floating[::1] x, floating[::1] out):
    """Write out = exp(x) with the exponential of _fastmath.h, for accuracy tests."""
    cdef Py_ssize_t n = x.shape[0]
    check_unary(x, out, "x", "out")
    if n == 0:
        return
    with nogil:
        if floating is float:
            nnb_exp_f32(&x[0], &out[0], n)
        else:
            nnb_exp_f64(&x[0], &out[0], n)
