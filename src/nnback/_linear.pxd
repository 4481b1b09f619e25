# Row kernels of _linear.pyx that other kernel modules cimport.

from cython cimport floating


cdef void sum_columns(int n_samples, int n_outputs, const floating* dy,
                      floating* db) noexcept nogil
