"""Compiled parameter updates for ``nnback.optim``.

Every function updates a flat, C-contiguous parameter buffer in place from its
gradient, and never writes the gradient. ``param``, ``grad`` and the state
buffers share one dtype (float32 or float64) and one length, which the Python
tier checks; none of them may overlap another. The arithmetic runs in that
dtype with the GIL released, and an empty buffer is a no-op.

In each formula, ``g`` is the gradient with weight decay (L2) added:
``g = grad + weight_decay * param``. The addition is skipped when
``weight_decay == 0`` so that an infinite parameter does not turn into NaN.

SGD with momentum ``mu`` keeps the velocity ``v`` (zero before the first step)::

    v = mu * v + g
    param -= lr * (g + mu * v)      if nesterov
    param -= lr * v                 otherwise

Adam keeps the first and second moments ``m`` and ``s`` (zero before the first
step) and updates, at step ``t = 1, 2, ...``::

    m = m + (1 - beta1) * (g - m)         (equal to beta1 * m + (1 - beta1) * g)
    s = beta2 * s + (1 - beta2) * g * g
    param -= step_size * m / (sqrt(s) / bias_correction2_sqrt + eps)

where the caller passes ``step_size = lr / (1 - beta1**t)`` and
``bias_correction2_sqrt = sqrt(1 - beta2**t)``.

Each loop body is branch-free: the options select one of several loops before
the loop starts, so that the compiler can vectorize it.
"""

from cython cimport floating
from libc.math cimport sqrt, sqrtf


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


# TODO: loops that call square_root are not vectorized unless the build passes
# -fno-math-errno, because sqrt may set errno. setup.py does not pass it yet;
# with it, the float32 Adam update ran about 6x faster (110k parameters, 2-core
# x86-64, GCC 12).
cdef inline floating square_root(floating value) noexcept nogil:
    if floating is float:
        return sqrtf(value)
    else:
        return sqrt(value)


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------


cdef void sgd_rows(Py_ssize_t n, floating* param, const floating* grad,
                   floating rate, floating decay) noexcept nogil:
    cdef Py_ssize_t i
    if decay != 0:
        for i in range(n):
            param[i] = param[i] - rate * (grad[i] + decay * param[i])
    else:
        for i in range(n):
            param[i] = param[i] - rate * grad[i]


def sgd_update(floating[::1] param, const floating[::1] grad,
               double lr, double weight_decay):
    """Apply ``param -= lr * (grad + weight_decay * param)`` in place."""
    cdef Py_ssize_t n = param.shape[0]

    if n == 0:
        return
    with nogil:
        sgd_rows(n, &param[0], &grad[0], <floating> lr, <floating> weight_decay)


cdef void sgd_momentum_rows(Py_ssize_t n, floating* param, const floating* grad,
                            floating* velocity, floating rate, floating mu,
                            floating decay, bint nesterov) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, v

    if decay != 0:
        if nesterov:
            for i in range(n):
                g = grad[i] + decay * param[i]
                v = mu * velocity[i] + g
                velocity[i] = v
                param[i] = param[i] - rate * (g + mu * v)
        else:
            for i in range(n):
                g = grad[i] + decay * param[i]
                v = mu * velocity[i] + g
                velocity[i] = v
                param[i] = param[i] - rate * v
    else:
        if nesterov:
            for i in range(n):
                g = grad[i]
                v = mu * velocity[i] + g
                velocity[i] = v
                param[i] = param[i] - rate * (g + mu * v)
        else:
            for i in range(n):
                v = mu * velocity[i] + grad[i]
                velocity[i] = v
                param[i] = param[i] - rate * v


def sgd_momentum_update(floating[::1] param, const floating[::1] grad,
                        floating[::1] velocity, double lr, double momentum,
                        double weight_decay, bint nesterov):
    """Apply one SGD step with (Nesterov) momentum, updating ``velocity`` in place."""
    cdef Py_ssize_t n = param.shape[0]

    if n == 0:
        return
    with nogil:
        sgd_momentum_rows(n, &param[0], &grad[0], &velocity[0], <floating> lr,
                          <floating> momentum, <floating> weight_decay, nesterov)


# ---------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------


cdef void adam_rows(Py_ssize_t n, floating* param, const floating* grad,
                    floating* exp_avg, floating* exp_avg_sq, floating rate,
                    floating one_minus_beta1, floating beta2, floating one_minus_beta2,
                    floating eps, floating decay, floating correction2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, m, s

    if decay != 0:
        for i in range(n):
            g = grad[i] + decay * param[i]
            m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
            s = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = s
            param[i] = param[i] - rate * (m / (square_root(s) / correction2 + eps))
    else:
        for i in range(n):
            g = grad[i]
            m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
            s = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = s
            param[i] = param[i] - rate * (m / (square_root(s) / correction2 + eps))


def adam_update(floating[::1] param, const floating[::1] grad,
                floating[::1] exp_avg, floating[::1] exp_avg_sq,
                double step_size, double beta1, double beta2, double eps,
                double weight_decay, double bias_correction2_sqrt):
    """Apply one Adam step, updating the moments ``exp_avg`` and ``exp_avg_sq`` in place."""
    cdef Py_ssize_t n = param.shape[0]

    if n == 0:
        return
    with nogil:
        adam_rows(n, &param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0],
                  <floating> step_size, <floating> (1.0 - beta1), <floating> beta2,
                  <floating> (1.0 - beta2), <floating> eps, <floating> weight_decay,
                  <floating> bias_correction2_sqrt)
