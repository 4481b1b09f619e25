"""Build the compiled kernels of nnback.

Every ``nnback/_*.pyx`` file becomes one extension module. The Cython compiler
directives are set here and nowhere else. Set ``NNBACK_DEBUG=1`` in the
environment to build with bounds, wraparound and initialization checks turned
back on, and without optimization.

OpenMP: the build first compiles and links a small OpenMP program with the
compiler in use. If that works, it adds the OpenMP flag (``-fopenmp``, or
``/openmp`` for MSVC) to every extension. Otherwise, or with ``NNBACK_OPENMP=0``
set, the extensions are built without OpenMP and their ``prange`` loops run
serially.
"""

import os
import tempfile
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

DEBUG = os.environ.get("NNBACK_DEBUG", "") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# -fno-math-errno lets GCC vectorize loops that call sqrt; it keeps IEEE NaN and
# infinity semantics, unlike -ffast-math.
COMPILE_ARGS = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]


def make_extension(pyx_path):
    module_name = pyx_path[: -len(".pyx")].replace(os.sep, ".")
    return Extension(
        module_name,
        sources=[pyx_path],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
    )


extensions = [make_extension(path) for path in sorted(glob(os.path.join("nnback", "_*.pyx")))]

OPENMP_PROBE_SOURCE = """
#include <omp.h>

int main(void)
{
    int n_threads = 0;
#pragma omp parallel reduction(+ : n_threads)
    n_threads += 1;
    return n_threads > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def openmp_flags(compiler):
    """Return the (compile_args, link_args) that enable OpenMP for ``compiler``.

    Both lists are empty when NNBACK_OPENMP=0 is set or when the probe program
    fails to compile or link.
    """
    if os.environ.get("NNBACK_OPENMP", "") == "0":
        print("NNBACK_OPENMP=0 is set: building without OpenMP")
        return [], []

    if compiler.compiler_type == "msvc":
        compile_args, link_args = ["/openmp"], []
    else:
        compile_args, link_args = ["-fopenmp"], ["-fopenmp"]

    with tempfile.TemporaryDirectory() as temp_dir:
        source = os.path.join(temp_dir, "openmp_probe.c")
        with open(source, "w") as file:
            file.write(OPENMP_PROBE_SOURCE)
        try:
            objects = compiler.compile([source], output_dir=temp_dir, extra_postargs=compile_args)
            compiler.link_executable(
                objects, "openmp_probe", output_dir=temp_dir, extra_postargs=link_args
            )
        except (CompileError, LinkError):
            print("OpenMP probe failed to compile or link: building without OpenMP")
            return [], []

    print(f"OpenMP probe passed: adding {compile_args} to every extension")
    return compile_args, link_args


class BuildExtWithOpenMPProbe(build_ext):
    """build_ext that adds the OpenMP flags found by ``openmp_flags`` to every extension."""

    def build_extensions(self):
        compile_args, link_args = openmp_flags(self.compiler)
        for extension in self.extensions:
            extension.extra_compile_args = list(extension.extra_compile_args) + compile_args
            extension.extra_link_args = list(extension.extra_link_args) + link_args
        super().build_extensions()


setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
    cmdclass={"build_ext": BuildExtWithOpenMPProbe},
)
