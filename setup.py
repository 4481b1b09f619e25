"""Build the compiled kernels of nnback.

Every ``src/nnback/_*.pyx`` file becomes one extension module. The Cython compiler
directives are set here and nowhere else. Set ``NNBACK_DEBUG=1`` in the
environment to build with bounds, wraparound and initialization checks turned
back on, and without optimization.
"""

import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

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


SOURCE_ROOT = "src"
PACKAGE_DIR = os.path.join(SOURCE_ROOT, "nnback")


def make_extension(pyx_path):
    relative_path = os.path.relpath(pyx_path, SOURCE_ROOT)
    module_name = relative_path[: -len(".pyx")].replace(os.sep, ".")
    return Extension(
        module_name,
        sources=[pyx_path],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
        depends=[os.path.join(PACKAGE_DIR, "_fastmath.h")],
    )


extensions = [make_extension(path) for path in sorted(glob(os.path.join(PACKAGE_DIR, "_*.pyx")))]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        # The generated C files carry the directives, so a debug build regenerates them all.
        force=DEBUG,
    )
)
