"""Compiled softmax, log-softmax and softmax cross-entropy, one row at a time.

Logits z have shape (B, C). With the row maximum ``m_i = max_j z_ij``, the shifted
logits ``s_ij = z_ij - m_i`` and ``lse_i = log(sum_j exp(s_ij))``::

    p_ij     = exp(s_ij) / sum_k exp(s_ik)
    log p_ij = s_ij - lse_i

Cross-entropy with targets t (B, C) has the per-row loss and gradient::

    l_i        = -sum_j t_ij log p_ij = sum_j t_ij (lse_i - s_ij)
    dl_i/dz_ij = p_ij * sum_k t_ik - t_ij

A class index c_i stands for the one-hot row t_ij = [j == c_i], which gives
``l_i = lse_i - s_ic`` and ``dl_i/dz_i = p_i - onehot(c_i)``.

Note [max shift]: subtracting m_i leaves p unchanged and makes every exponent at
most 0, so exp never overflows and the sum is at least exp(0) = 1. The loss is
computed in the log domain from lse and s, never as log(p), and nothing is
clipped.

Note [NaN and infinities]: the row maximum skips NaN, but a NaN entry makes the
sum of exponentials NaN, so the row's p, log p, loss and gradient are NaN. A row
whose maximum is +inf, or whose entries are all -inf, meets inf - inf = NaN and
is NaN as well. A -inf entry in any other row has p = 0.

Note [zero targets]: a probability target of exactly 0 contributes no loss, even
where s is -inf (0 * log 0 = 0). A NaN row still has a NaN loss.

exp is the vectorized exponential of ``_fastmath.h`` (within 1.05 ulp of the
correctly rounded result), and log is the C library's.

Note [double sums]: the row sums of exponentials and of targets are accumulated
in double precision for float32 input too, over 16 interleaved partial sums
(``nnb_sum_f32``), which keeps them vectorized. Rows of fewer than 16 entries are
summed in order in their own dtype, with at most 15 roundings. Each sum is then
rounded once to the dtype of z, in which the log-sum-exp, the row loss and the
gradient are computed. A float32 running sum would stop growing once it is about
2**24 times its terms: a row of 2**24 or more equal logits would then have the
loss log(2**24) whatever its width. The sum of the row losses is accumulated in
double precision.

The entry points trust their arguments: ``nnback.functional`` checks shapes,
dtypes and layout, and range-checks class indices before calling them.
"""

from cython cimport floating
from libc.math cimport INFINITY, NAN, isnan, log, logf
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t,
                          uint8_t, uint16_t, uint32_t, uint64_t)


cdef extern from "_fastmath.h" nogil:
    # y[i] = e^x[i] for i < n, within 1.05 ulp and vectorized. y may be x itself.
    void nnb_exp_f32(const float* x, float* y, Py_ssize_t n)
    void nnb_exp_f64(const double* x, double* y, Py_ssize_t n)
    # sum_i x[i] for i < n. From n = 16 on, accumulated in double over 16
    # vectorized partial sums.
    double nnb_sum_f32(const float* x, Py_ssize_t n)
    double nnb_sum_f64(const double* x, Py_ssize_t n)


# Entries per block of the stack buffer that log_softmax exponentiates into.
cdef enum:
    EXP_BLOCK = 256


ctypedef fused integer_label:
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t


# ---------------------------------------------------------------------------
# Row helpers
# ---------------------------------------------------------------------------


cdef inline void exp_array(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        nnb_exp_f32(x, y, n)
    else:
        nnb_exp_f64(x, y, n)


cdef inline double sum_array(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return nnb_sum_f32(x, n)
    else:
        return nnb_sum_f64(x, n)


cdef inline floating log_of(floating value) noexcept nogil:
    if floating is float:
        return logf(value)
    else:
        return log(value)


cdef inline floating row_max(const floating* z, Py_ssize_t n_classes) noexcept nogil:
    # NaN fails every comparison and is skipped here, but it still reaches the
    # sum of exponentials (Note [NaN and infinities]). An empty row gives -inf.
    # Sixteen independent running maxima replace one chain of dependent
    # comparisons, so the loop is bound by the throughput of the max
    # instruction rather than its latency. ``value > m ? value : m`` keeps m for NaN.
    cdef floating partial[16]
    cdef floating maximum = -INFINITY
    cdef Py_ssize_t j, k
    cdef Py_ssize_t n_blocks_end = n_classes - n_classes % 16

    for k in range(16):
        partial[k] = -INFINITY
    for j in range(0, n_blocks_end, 16):
        for k in range(16):
            partial[k] = z[j + k] if z[j + k] > partial[k] else partial[k]
    for k in range(16):
        maximum = partial[k] if partial[k] > maximum else maximum
    for j in range(n_blocks_end, n_classes):
        maximum = z[j] if z[j] > maximum else maximum
    return maximum


cdef inline double exp_shifted(const floating* z, floating maximum,
                               floating* out, Py_ssize_t n_classes) noexcept nogil:
    # out[j] = exp(z[j] - maximum), and the return value is the sum of out in
    # double precision (Note [double sums]). The shift, the exponential and the
    # sum are separate vectorized loops. out may be z itself, because entry j is
    # read before it is written.
    cdef Py_ssize_t j
    for j in range(n_classes):
        out[j] = z[j] - maximum
    exp_array(out, out, n_classes)
    return sum_array(out, n_classes)


cdef inline floating sum_exp(const floating* values, Py_ssize_t n) noexcept nogil:
    # sum_j exp(values[j]), exponentiated block by block into a stack buffer,
    # so that values is left unchanged. The blocks are added in double
    # precision (Note [double sums]). A row of one block returns its sum
    # directly, which keeps float32 to float64 conversions off the dependency
    # chain of short rows.
    cdef floating buffer[EXP_BLOCK]
    cdef double total
    cdef Py_ssize_t start, count

    count = min(<Py_ssize_t> EXP_BLOCK, n)
    exp_array(values, buffer, count)
    if count == n:
        return <floating> sum_array(buffer, count)

    total = sum_array(buffer, count)
    start = count
    while start < n:
        count = min(<Py_ssize_t> EXP_BLOCK, n - start)
        exp_array(values + start, buffer, count)
        total += sum_array(buffer, count)
        start += count
    return <floating> total


# ---------------------------------------------------------------------------
# Softmax and log-softmax
# ---------------------------------------------------------------------------


cdef void softmax_rows(Py_ssize_t n_rows, Py_ssize_t n_classes,
                       const floating* z, floating* p) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating maximum, inverse_sum
    cdef const floating* z_row
    cdef floating* p_row

    for i in range(n_rows):
        z_row = z + i * n_classes
        p_row = p + i * n_classes
        maximum = row_max(z_row, n_classes)
        inverse_sum = 1 / <floating> exp_shifted(z_row, maximum, p_row, n_classes)
        for j in range(n_classes):
            p_row[j] *= inverse_sum


def softmax(const floating[:, ::1] z, floating[:, ::1] p):
    """Write ``p = softmax(z)`` row by row, where ``p`` may be ``z`` itself. Returns None."""
    cdef Py_ssize_t n_rows = z.shape[0]
    cdef Py_ssize_t n_classes = z.shape[1]

    if n_rows == 0 or n_classes == 0:
        return
    with nogil:
        softmax_rows(n_rows, n_classes, &z[0, 0], &p[0, 0])


cdef void log_softmax_rows(Py_ssize_t n_rows, Py_ssize_t n_classes,
                           const floating* z, floating* log_p) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating maximum, log_sum_exp
    cdef const floating* z_row
    cdef floating* out_row

    for i in range(n_rows):
        z_row = z + i * n_classes
        out_row = log_p + i * n_classes
        maximum = row_max(z_row, n_classes)

        # The shifted logits go into the output first, so that the row can be
        # computed in place: z is not read again after this loop.
        for j in range(n_classes):
            out_row[j] = z_row[j] - maximum
        log_sum_exp = log_of(sum_exp(out_row, n_classes))
        for j in range(n_classes):
            out_row[j] -= log_sum_exp


def log_softmax(const floating[:, ::1] z, floating[:, ::1] log_p):
    """Write ``log_p = log_softmax(z)`` row by row. ``log_p`` may be ``z`` itself."""
    cdef Py_ssize_t n_rows = z.shape[0]
    cdef Py_ssize_t n_classes = z.shape[1]

    if n_rows == 0 or n_classes == 0:
        return
    with nogil:
        log_softmax_rows(n_rows, n_classes, &z[0, 0], &log_p[0, 0])


# ---------------------------------------------------------------------------
# Cross-entropy with class indices
# ---------------------------------------------------------------------------


cdef double cross_entropy_labels_rows(Py_ssize_t n_rows, Py_ssize_t n_classes,
                                      const floating* z, const Py_ssize_t* labels,
                                      floating gradient_scale, floating* dz,
                                      floating* row_loss) noexcept nogil:
    # One pass per row: maximum, exponentials into dz, log-sum-exp, loss, then
    # dz = gradient_scale * (p - onehot). Returns the sum of the row losses.
    # row_loss may be NULL. dz must not overlap z.
    cdef Py_ssize_t i, j, label
    cdef floating maximum, total, loss, p_scale
    cdef const floating* z_row
    cdef floating* dz_row
    cdef double loss_sum = 0

    for i in range(n_rows):
        z_row = z + i * n_classes
        dz_row = dz + i * n_classes
        label = labels[i]

        maximum = row_max(z_row, n_classes)
        total = <floating> exp_shifted(z_row, maximum, dz_row, n_classes)
        # l_i = lse_i - s_ic with s_ic = z_ic - m_i.
        loss = log_of(total) - (z_row[label] - maximum)

        # dz_row contains exp(s_ij), and p_ij is that divided by the row total.
        p_scale = gradient_scale / total
        for j in range(n_classes):
            dz_row[j] *= p_scale
        dz_row[label] -= gradient_scale

        if row_loss != NULL:
            row_loss[i] = loss
        loss_sum += loss
    return loss_sum


def cross_entropy_labels(const floating[:, ::1] z, const Py_ssize_t[::1] labels,
                         double gradient_scale, floating[:, ::1] dz,
                         floating[::1] row_loss):
    """Compute the cross-entropy of z (B, C) against class indices labels (B,).

    Writes the gradient of the summed loss, times ``gradient_scale``, into dz
    (B, C), and the per-row losses into ``row_loss`` (B,) unless it is None.
    Every label must lie in [0, C). Returns the sum of the row losses as a float,
    accumulated in double precision.
    """
    cdef Py_ssize_t n_rows = z.shape[0]
    cdef Py_ssize_t n_classes = z.shape[1]
    cdef floating* row_loss_data = NULL
    cdef double loss_sum

    # B > 0 implies C > 0, because no label is valid when C == 0.
    if n_rows == 0:
        return 0.0
    if row_loss is not None:
        row_loss_data = &row_loss[0]

    with nogil:
        loss_sum = cross_entropy_labels_rows(n_rows, n_classes, &z[0, 0], &labels[0],
                                             <floating> gradient_scale, &dz[0, 0],
                                             row_loss_data)
    return loss_sum


# ---------------------------------------------------------------------------
# Cross-entropy with probability targets
# ---------------------------------------------------------------------------


cdef double cross_entropy_probabilities_rows(Py_ssize_t n_rows, Py_ssize_t n_classes,
                                             const floating* z, const floating* targets,
                                             floating gradient_scale, floating* dz,
                                             floating* row_loss) noexcept nogil:
    # One pass per row: maximum and target sum, exponentials into dz,
    # log-sum-exp, then the loss and dz = gradient_scale * (p * sum(t) - t)
    # together. Returns the sum of the row losses. row_loss may be NULL.
    # dz must not overlap z or targets.
    cdef Py_ssize_t i, j
    cdef floating maximum, total, target_sum, log_sum_exp, p_scale, target
    cdef const floating* z_row
    cdef const floating* t_row
    cdef floating* dz_row
    cdef double loss, loss_sum = 0

    for i in range(n_rows):
        z_row = z + i * n_classes
        t_row = targets + i * n_classes
        dz_row = dz + i * n_classes

        maximum = row_max(z_row, n_classes)
        target_sum = <floating> sum_array(t_row, n_classes)
        total = <floating> exp_shifted(z_row, maximum, dz_row, n_classes)
        log_sum_exp = log_of(total)

        # dz_row contains exp(s_ij), so p_ij * sum(t) = dz_row[j] * sum(t) / total.
        p_scale = target_sum * gradient_scale / total
        loss = 0
        for j in range(n_classes):
            target = t_row[j]
            dz_row[j] = dz_row[j] * p_scale - target * gradient_scale
            # Note [zero targets]: skipping t == 0 keeps 0 * (lse - (-inf)) out
            # of the sum, where it would be NaN.
            if target != 0:
                loss += target * (log_sum_exp - (z_row[j] - maximum))

        # A NaN row has a NaN loss even where every target is 0. An empty row
        # (C == 0) has log_sum_exp = log(0) = -inf and the loss 0.
        if isnan(log_sum_exp):
            loss = NAN

        if row_loss != NULL:
            row_loss[i] = <floating> loss
        loss_sum += loss
    return loss_sum


def cross_entropy_probabilities(const floating[:, ::1] z, const floating[:, ::1] targets,
                                double gradient_scale, floating[:, ::1] dz,
                                floating[::1] row_loss):
    """Compute the cross-entropy of z (B, C) against probability targets (B, C).

    Writes the gradient of the summed loss, times ``gradient_scale``, into dz
    (B, C), and the per-row losses into ``row_loss`` (B,) unless it is None.
    Target rows need not sum to 1. Returns the sum of the row losses as a float,
    accumulated in double precision.
    """
    cdef Py_ssize_t n_rows = z.shape[0]
    cdef Py_ssize_t n_classes = z.shape[1]
    cdef floating* row_loss_data = NULL
    cdef Py_ssize_t i
    cdef double loss_sum

    if n_rows == 0:
        return 0.0
    if n_classes == 0:
        # Every row is an empty sum.
        if row_loss is not None:
            with nogil:
                for i in range(n_rows):
                    row_loss[i] = 0
        return 0.0
    if row_loss is not None:
        row_loss_data = &row_loss[0]

    with nogil:
        loss_sum = cross_entropy_probabilities_rows(n_rows, n_classes, &z[0, 0],
                                                    &targets[0, 0],
                                                    <floating> gradient_scale,
                                                    &dz[0, 0], row_loss_data)
    return loss_sum


# ---------------------------------------------------------------------------
# Class-index range check
# ---------------------------------------------------------------------------


cdef Py_ssize_t first_invalid_label_of(const integer_label* labels, Py_ssize_t n_labels,
                                       Py_ssize_t n_classes) noexcept nogil:
    # Both comparisons are exact: uint64 labels are compared as uint64 against
    # the non-negative n_classes, and every narrower label type converts to the
    # 64-bit Py_ssize_t. For unsigned types the test label < 0 is always false.
    cdef Py_ssize_t i
    for i in range(n_labels):
        if integer_label is uint64_t:
            if labels[i] >= <uint64_t> n_classes:
                return i
        else:
            if labels[i] < 0 or labels[i] >= n_classes:
                return i
    return -1


def first_invalid_label(const integer_label[::1] labels, Py_ssize_t n_classes):
    """Return the position of the first label outside [0, n_classes), or -1."""
    cdef Py_ssize_t n_labels = labels.shape[0]
    cdef Py_ssize_t position

    if n_labels == 0:
        return -1
    with nogil:
        position = first_invalid_label_of(&labels[0], n_labels, n_classes)
    return position
