# Row kernels of _softmax.pyx that other kernel modules cimport.

from cython cimport floating


cdef double cross_entropy_labels_rows(Py_ssize_t n_rows, Py_ssize_t n_classes,
                                      const floating* z, const Py_ssize_t* labels,
                                      floating gradient_scale, floating* dz,
                                      floating* row_loss) noexcept nogil
