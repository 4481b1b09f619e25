"""Compiled training step of a chain of dense layers with softmax cross-entropy.

A chain is ``L`` dense blocks. Block ``l`` maps ``a_l`` (B, n_l) to
``a_{l+1} = act_l(a_l @ W_l + b_l)`` (B, n_{l+1}), where ``act_l`` is ReLU,
sigmoid, tanh or the identity, and ``a_0 = x``. The last block's output is the
logits ``z``, and the loss is the softmax cross-entropy of ``z`` against class
indices. One call of ``DenseChain.train_step`` runs the whole step with the GIL
released:

    forward    a_{l+1} = act_l(a_l @ W_l + b_l)      one gemm, then the epilogue in cache
    loss       l, g_L = dl/dz                        one fused pass per row
    backward   g_{l+1} *= act_l'(a_{l+1})            then db = column sums of g_{l+1}
               g_l = g_{l+1} @ W_l.T                 skipped for the first block
               dW_l = a_l.T @ g_{l+1}

The activation derivatives are read from the forward outputs, as in
``nnback.functional``: ReLU ``[y > 0]``, sigmoid ``y (1 - y)``, tanh ``1 - y^2``.

Note [fused SGD]: with plain SGD (no momentum) the weight gradient is never
stored. ``W <- (1 - lr * weight_decay) * W - lr * a_l.T @ g`` is one gemm with
``alpha = -lr`` and ``beta = 1 - lr * weight_decay``, run after ``g_l`` has
used the old ``W``. Otherwise the gradients are written to ``.grad`` and the
optimizer updates the parameters afterwards.
"""

import threading

import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdlib cimport free, malloc

from nnback._blas cimport gemm
from nnback._linear cimport sum_columns
from nnback._softmax cimport cross_entropy_labels_rows

cnp.import_array()


cdef extern from "_fastmath.h" nogil:
    # Array loops over n elements, compiled for several instruction sets; an
    # output may be the same buffer as an input.
    void nnb_relu_forward_f32(const float* x, float* y, Py_ssize_t n)
    void nnb_relu_forward_f64(const double* x, double* y, Py_ssize_t n)
    void nnb_sigmoid_forward_f32(const float* x, float* y, Py_ssize_t n)
    void nnb_sigmoid_forward_f64(const double* x, double* y, Py_ssize_t n)
    void nnb_tanh_forward_f32(const float* x, float* y, Py_ssize_t n)
    void nnb_tanh_forward_f64(const double* x, double* y, Py_ssize_t n)
    void nnb_relu_backward_f32(const float* y, const float* dy, float* dx, Py_ssize_t n)
    void nnb_relu_backward_f64(const double* y, const double* dy, double* dx, Py_ssize_t n)
    void nnb_sigmoid_backward_f32(const float* y, const float* dy, float* dx, Py_ssize_t n)
    void nnb_sigmoid_backward_f64(const double* y, const double* dy, double* dx, Py_ssize_t n)
    void nnb_tanh_backward_f32(const float* y, const float* dy, float* dx, Py_ssize_t n)
    void nnb_tanh_backward_f64(const double* y, const double* dy, double* dx, Py_ssize_t n)


# Activation codes of a block; the Python tier maps layer classes onto them.
cpdef enum Activation:
    IDENTITY = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3


# Pointers to the arrays of one step, filled from the Python objects before
# the GIL is released. Each array of pointers has one entry per block.
cdef struct StepArrays:
    int n_blocks
    int n_samples
    const int* sizes            # n_blocks + 1 widths: n_0, ..., n_L
    const int* activations
    const void* x               # (B, n_0)
    const Py_ssize_t* labels    # (B,), each in [0, n_L)
    void** weights              # (n_l, n_{l+1})
    void** biases               # (n_{l+1},) or NULL
    void** weight_grads         # .grad of the weights, unused with fused SGD
    void** bias_grads           # .grad of the biases, or NULL
    void** outputs              # a_{l+1}: (B, n_{l+1})
    void** output_grads         # g_{l+1}: (B, n_{l+1})
    void** bias_steps           # scratch (n_{l+1},) for db under fused SGD


# ---------------------------------------------------------------------------
# Element-wise epilogues
# ---------------------------------------------------------------------------


cdef void bias_activation(int n_rows, int n_columns, int activation,
                          const floating* bias, floating* y) noexcept nogil:
    # y = act(y + b): the bias row by row, then the activation over the block,
    # which is still in cache.
    cdef Py_ssize_t i, j
    cdef Py_ssize_t size = <Py_ssize_t> n_rows * n_columns
    cdef floating* row

    if bias != NULL:
        for i in range(n_rows):
            row = y + i * n_columns
            for j in range(n_columns):
                row[j] = row[j] + bias[j]

    if floating is float:
        if activation == RELU:
            nnb_relu_forward_f32(y, y, size)
        elif activation == SIGMOID:
            nnb_sigmoid_forward_f32(y, y, size)
        elif activation == TANH:
            nnb_tanh_forward_f32(y, y, size)
    else:
        if activation == RELU:
            nnb_relu_forward_f64(y, y, size)
        elif activation == SIGMOID:
            nnb_sigmoid_forward_f64(y, y, size)
        elif activation == TANH:
            nnb_tanh_forward_f64(y, y, size)


cdef void activation_derivative(int n_rows, int n_columns, int activation,
                                const floating* y, floating* grad) noexcept nogil:
    # grad *= act'(y) in place, with the derivative read from the forward output.
    cdef Py_ssize_t size = <Py_ssize_t> n_rows * n_columns

    if floating is float:
        if activation == RELU:
            nnb_relu_backward_f32(y, grad, grad, size)
        elif activation == SIGMOID:
            nnb_sigmoid_backward_f32(y, grad, grad, size)
        elif activation == TANH:
            nnb_tanh_backward_f32(y, grad, grad, size)
    else:
        if activation == RELU:
            nnb_relu_backward_f64(y, grad, grad, size)
        elif activation == SIGMOID:
            nnb_sigmoid_backward_f64(y, grad, grad, size)
        elif activation == TANH:
            nnb_tanh_backward_f64(y, grad, grad, size)


cdef void scaled_update(int n, floating scale, floating step, const floating* delta,
                        floating* values) noexcept nogil:
    # values = scale * values - step * delta
    cdef Py_ssize_t j
    for j in range(n):
        values[j] = scale * values[j] - step * delta[j]


# ---------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------


cdef double run_step(floating kind, const StepArrays* arrays, bint fused_sgd,
                     double learning_rate, double decay_factor,
                     double gradient_scale) noexcept nogil:
    # Forward, loss and backward of one batch; returns the sum of the row
    # losses. ``kind`` only selects the dtype.
    cdef int n_blocks = arrays.n_blocks
    cdef int n_samples = arrays.n_samples
    cdef const int* sizes = arrays.sizes
    cdef int block, n_in, n_out
    cdef const floating* block_input
    cdef floating* output
    cdef floating* output_grad
    cdef floating* weight
    cdef floating* bias
    cdef floating* bias_delta
    cdef double loss_sum

    # Forward: a_{l+1} = act(a_l @ W_l + b_l).
    block_input = <const floating*> arrays.x
    for block in range(n_blocks):
        n_in = sizes[block]
        n_out = sizes[block + 1]
        output = <floating*> arrays.outputs[block]
        gemm(False, False, n_samples, n_out, n_in, <floating> 1, block_input, n_in,
             <const floating*> arrays.weights[block], n_out, <floating> 0, output, n_out)
        bias_activation(n_samples, n_out, arrays.activations[block],
                        <const floating*> arrays.biases[block], output)
        block_input = output

    # Loss: the gradient of the reduced loss goes straight into g_L.
    loss_sum = cross_entropy_labels_rows(
        n_samples, sizes[n_blocks], <const floating*> arrays.outputs[n_blocks - 1],
        arrays.labels, <floating> gradient_scale,
        <floating*> arrays.output_grads[n_blocks - 1], NULL)

    # Backward, from the last block to the first.
    for block in range(n_blocks - 1, -1, -1):
        n_in = sizes[block]
        n_out = sizes[block + 1]
        output_grad = <floating*> arrays.output_grads[block]
        weight = <floating*> arrays.weights[block]
        bias = <floating*> arrays.biases[block]
        block_input = (<const floating*> arrays.x if block == 0
                       else <const floating*> arrays.outputs[block - 1])

        if bias == NULL:
            bias_delta = NULL
        elif fused_sgd:
            bias_delta = <floating*> arrays.bias_steps[block]
        else:
            bias_delta = <floating*> arrays.bias_grads[block]
        activation_derivative(n_samples, n_out, arrays.activations[block],
                              <const floating*> arrays.outputs[block], output_grad)
        if bias_delta != NULL:
            sum_columns(n_samples, n_out, output_grad, bias_delta)

        # g_l = g_{l+1} @ W_l.T, with the weights from before this step's update.
        if block > 0:
            gemm(False, True, n_samples, n_in, n_out, <floating> 1, output_grad, n_out,
                 weight, n_out, <floating> 0, <floating*> arrays.output_grads[block - 1], n_in)

        if fused_sgd:
            # W = decay_factor * W - lr * a_l.T @ g_{l+1}; see Note [fused SGD].
            gemm(True, False, n_in, n_out, n_samples, <floating> -learning_rate,
                 block_input, n_in, output_grad, n_out, <floating> decay_factor,
                 weight, n_out)
            if bias != NULL:
                scaled_update(n_out, <floating> decay_factor, <floating> learning_rate,
                              bias_delta, bias)
        else:
            gemm(True, False, n_in, n_out, n_samples, <floating> 1, block_input, n_in,
                 output_grad, n_out, <floating> 0,
                 <floating*> arrays.weight_grads[block], n_out)

    return loss_sum


# ---------------------------------------------------------------------------
# Python entry point
# ---------------------------------------------------------------------------


cdef inline void* data_of(object array):
    return cnp.PyArray_DATA(<cnp.ndarray> array)


cdef inline object kept(list references, object array):
    # Append ``array`` to ``references`` and return it.
    references.append(array)
    return array


cdef class DenseChain:
    """Training step of a chain of dense blocks, compiled end to end.

    Parameters
    ----------
    weights : list of Parameter
        ``W_l`` of shape (n_l, n_{l+1}), all of one dtype (float32 or float64).
    biases : list of Parameter or None
        ``b_l`` of shape (n_{l+1},), or None for a block without bias.
    activations : list of int
        An ``Activation`` code per block.

    The caller guarantees the shapes and dtypes above. ``train_step`` reads
    ``.data`` and ``.grad`` of every Parameter anew on each call, so replacing
    them between steps is safe.
    """

    cdef readonly list weights
    cdef readonly list biases
    cdef readonly object dtype
    cdef int n_blocks
    cdef int* sizes
    cdef int* activations
    cdef void** pointers           # 7 arrays of n_blocks pointers, one allocation
    cdef dict workspaces           # batch size -> (outputs, output_grads, bias_steps)
    cdef object lock               # one step at a time: the tables above are shared

    def __cinit__(self, list weights, list biases, list activations):
        cdef int n_blocks = len(weights)
        cdef int block

        if n_blocks == 0 or len(biases) != n_blocks or len(activations) != n_blocks:
            raise ValueError(
                f"DenseChain needs one bias entry and one activation per weight, got "
                f"{n_blocks} weights, {len(biases)} biases and {len(activations)} activations"
            )
        self.weights = weights
        self.biases = biases
        self.dtype = weights[0].data.dtype
        self.n_blocks = n_blocks
        self.workspaces = {}
        self.lock = threading.Lock()

        self.sizes = <int*> malloc((n_blocks + 1) * sizeof(int))
        self.activations = <int*> malloc(n_blocks * sizeof(int))
        self.pointers = <void**> malloc(7 * n_blocks * sizeof(void*))
        if self.sizes == NULL or self.activations == NULL or self.pointers == NULL:
            raise MemoryError("could not allocate the DenseChain tables")

        self.sizes[0] = weights[0].data.shape[0]
        for block in range(n_blocks):
            self.sizes[block + 1] = weights[block].data.shape[1]
            self.activations[block] = activations[block]

    def __dealloc__(self):
        free(self.sizes)
        free(self.activations)
        free(self.pointers)

    cdef tuple workspace(self, int n_samples):
        # Work buffers for one batch size; a new size replaces the cached ones
        # once more than a few sizes have been seen.
        cdef tuple buffers = self.workspaces.get(n_samples)
        cdef int block

        if buffers is not None:
            return buffers
        if len(self.workspaces) >= 4:
            self.workspaces.clear()
        buffers = (
            [np.empty((n_samples, self.sizes[block + 1]), self.dtype)
             for block in range(self.n_blocks)],
            [np.empty((n_samples, self.sizes[block + 1]), self.dtype)
             for block in range(self.n_blocks)],
            [np.empty(self.sizes[block + 1], self.dtype) for block in range(self.n_blocks)],
        )
        self.workspaces[n_samples] = buffers
        return buffers

    def train_step(self, cnp.ndarray x, cnp.ndarray labels, bint fused_sgd,
                   double learning_rate=0.0, double weight_decay=0.0, bint mean=True):
        """Run forward, loss and backward for one batch; return the reduced loss.

        ``x`` must be C-contiguous of shape (B, n_0) in the chain's dtype and
        ``labels`` C-contiguous ``intp`` of shape (B,) with every label in
        [0, n_L); the caller checks both. With ``fused_sgd`` the parameters are
        updated by plain SGD (see Note [fused SGD]); otherwise the gradients are
        written to ``.grad``. ``mean`` selects the "mean" reduction, else "sum".
        The mean over an empty batch is NaN.
        """
        with self.lock:
            return self.locked_step(x, labels, fused_sgd, learning_rate, weight_decay, mean)

    cdef object locked_step(self, cnp.ndarray x, cnp.ndarray labels, bint fused_sgd,
                            double learning_rate, double weight_decay, bint mean):
        # The body of train_step; the caller holds self.lock, because the pointer
        # tables and work buffers are shared by every call.
        cdef int n_samples = x.shape[0]
        cdef int n_blocks = self.n_blocks
        cdef int block
        cdef StepArrays arrays
        cdef double loss_sum
        cdef double gradient_scale = 1.0
        cdef double decay_factor = 1.0 - learning_rate * weight_decay
        cdef bint single_precision = self.dtype == np.float32
        cdef list outputs, output_grads, bias_steps
        cdef object bias
        # The parameter arrays of this step. Another thread may assign a new
        # array to a Parameter's data or grad while the GIL is released, which
        # would free the old array under the kernel, so the step keeps its own
        # references until it ends.
        cdef list parameter_arrays = []

        outputs, output_grads, bias_steps = self.workspace(n_samples)
        if mean and n_samples > 0:
            gradient_scale = 1.0 / n_samples

        arrays.n_blocks = n_blocks
        arrays.n_samples = n_samples
        arrays.sizes = self.sizes
        arrays.activations = self.activations
        arrays.x = data_of(x)
        arrays.labels = <const Py_ssize_t*> data_of(labels)
        arrays.weights = self.pointers
        arrays.biases = self.pointers + n_blocks
        arrays.weight_grads = self.pointers + 2 * n_blocks
        arrays.bias_grads = self.pointers + 3 * n_blocks
        arrays.outputs = self.pointers + 4 * n_blocks
        arrays.output_grads = self.pointers + 5 * n_blocks
        arrays.bias_steps = self.pointers + 6 * n_blocks

        for block in range(n_blocks):
            arrays.weights[block] = data_of(kept(parameter_arrays, self.weights[block].data))
            arrays.weight_grads[block] = data_of(kept(parameter_arrays, self.weights[block].grad))
            bias = self.biases[block]
            if bias is None:
                arrays.biases[block] = NULL
                arrays.bias_grads[block] = NULL
            else:
                arrays.biases[block] = data_of(kept(parameter_arrays, bias.data))
                arrays.bias_grads[block] = data_of(kept(parameter_arrays, bias.grad))
            arrays.outputs[block] = data_of(outputs[block])
            arrays.output_grads[block] = data_of(output_grads[block])
            arrays.bias_steps[block] = data_of(bias_steps[block])

        if n_samples == 0:
            self.empty_batch_step(fused_sgd, decay_factor)
            return float("nan") if mean else 0.0

        with nogil:
            if single_precision:
                loss_sum = run_step(<float> 0, &arrays, fused_sgd, learning_rate,
                                    decay_factor, gradient_scale)
            else:
                loss_sum = run_step(<double> 0, &arrays, fused_sgd, learning_rate,
                                    decay_factor, gradient_scale)

        # Round to the computation dtype, as nnback.functional does. Under IEEE
        # rules a float32 overflow rounds to +-inf.
        if single_precision:
            return <double> (<float> (loss_sum * gradient_scale))
        return loss_sum * gradient_scale

    cdef empty_batch_step(self, bint fused_sgd, double decay_factor):
        # An empty batch has zero gradients, so fused SGD only applies the decay.
        cdef list parameters = self.weights + [bias for bias in self.biases if bias is not None]
        for parameter in parameters:
            if fused_sgd:
                parameter.data *= decay_factor
            else:
                parameter.grad[...] = 0
