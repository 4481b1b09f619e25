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
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("NNBACK_DEBUG", "") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# Compiler options by compiler type. -fno-math-errno lets GCC and clang vectorize
# loops that call sqrt, and it keeps IEEE NaN and infinity semantics, unlike
# -ffast-math. /fp:precise is MSVC's default model and keeps the same semantics.
COMPILE_ARGS = {
    "unix": ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"],
    "msvc": ["/Od", "/Zi"] if DEBUG else ["/O2", "/fp:precise"],
}


class BuildExtension(build_ext):
    """Add the compile options of the compiler that setuptools picked."""

    def build_extensions(self):
        # NOTE: the MSVC options are untested, because no Windows build has run.
        # Compiler types not listed get setuptools' default options only.
        options = COMPILE_ARGS.get(self.compiler.compiler_type, [])
        for extension in self.extensions:
            extension.extra_compile_args = options + extension.extra_compile_args
        super().build_extensions()


SOURCE_ROOT = "src"
PACKAGE_DIR = os.path.join(SOURCE_ROOT, "nnback")


def make_extension(pyx_path):
    relative_path = os.path.relpath(pyx_path, SOURCE_ROOT)
    module_name = relative_path[: -len(".pyx")].replace(os.sep, ".")
    return Extension(
        module_name,
        sources=[pyx_path],
        include_dirs=[numpy.get_include()],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ("NNBACK_DEBUG_BUILD", "1" if DEBUG else "0"),
        ],
        depends=[os.path.join(PACKAGE_DIR, "_fastmath.h")],
    )


extensions = [make_extension(path) for path in sorted(glob(os.path.join(PACKAGE_DIR, "_*.pyx")))]

setup(
    cmdclass={"build_ext": BuildExtension},
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        # The generated C files carry the directives, so a debug build regenerates them all.
        force=DEBUG,
    )
)
