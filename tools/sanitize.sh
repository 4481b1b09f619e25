#!/usr/bin/env bash
# Run a subset of the tests against nnback's extensions built with
# AddressSanitizer and UndefinedBehaviorSanitizer (GCC).
#
# Usage: tools/sanitize.sh [--debug] [pytest arguments]
#
# The sources are copied to a scratch directory and built there, so the .so
# files in src/nnback are left alone. --debug also turns on Cython's bounds,
# wraparound and initialization checks (NNBACK_DEBUG=1) and builds with -O0.
# Without pytest arguments the script runs DEFAULT_TESTS. It exits non-zero
# if a test fails or a sanitizer reports an error, which aborts the run.
#
# Python and NumPy are not instrumented, so libasan is preloaded into the
# interpreter and leak detection is off: CPython keeps many allocations alive
# until exit on purpose, which LeakSanitizer would report. Leaks are covered by
# tests/test_memory.py instead. libstdc++ is preloaded after libasan because
# ASan's C++ exception interceptor aborts when libstdc++ loads later (it does
# when matplotlib's C++ extension is imported). Reports are written to
# sanitizer.<pid> files, because pytest captures the tests' stderr and a report
# ends the process before pytest can print it. Set NNBACK_SANITIZE_DIR to keep the build in a
# directory of your choice (it is reused and not deleted).
set -euo pipefail

DEFAULT_TESTS=(
    tests/test_functional.py
    tests/test_blas.py
    tests/test_activations_kernels.py
    tests/test_layers.py
    tests/test_optim.py
    tests/test_training.py
    tests/test_serialization.py
    tests/test_properties.py
    tests/test_alignment.py
)

debug=0
if [[ "${1:-}" == "--debug" ]]; then
    debug=1
    shift
fi
if [[ $# -eq 0 ]]; then
    set -- "${DEFAULT_TESTS[@]}"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n "${NNBACK_SANITIZE_DIR:-}" ]]; then
    work=$NNBACK_SANITIZE_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

libasan=$(gcc -print-file-name=libasan.so)
libstdcxx=$(gcc -print-file-name=libstdc++.so)
for library in "$libasan" "$libstdcxx"; do
    if [[ ! -e "$library" ]]; then
        echo "$library not found: install GCC 12 or later with its sanitizer runtimes" >&2
        exit 1
    fi
done

echo "== copying the sources to $work"
rm -rf "$work/src" "$work/build"
cp -r "$repo/src" "$repo/setup.py" "$repo/pyproject.toml" "$repo/README.md" "$repo/LICENSE" "$work/"
# Drop the normal build's modules so that only the instrumented ones load.
rm -f "$work"/src/nnback/*.so

echo "== building with -fsanitize=address,undefined (NNBACK_DEBUG=$debug)"
sanitize_flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
(
    cd "$work"
    NNBACK_DEBUG=$debug CFLAGS="$sanitize_flags" LDFLAGS="$sanitize_flags" \
        python setup.py build_ext --inplace --parallel "$(nproc)" --build-temp "$work/build" \
            > "$work/build.log" 2>&1
) || {
    tail -n 40 "$work/build.log"
    exit 1
}

echo "== running pytest $*"
cd "$repo"
rm -f "$work"/sanitizer.*
# halt_on_error is ASan's default; it is set here so that a report always ends
# the run with a non-zero status.
export PYTHONPATH="$work/src"
export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$work/sanitizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$work/sanitizer"
python -c "import nnback, sys; sys.exit(0 if nnback.__file__.startswith('$work/') else 'nnback was not imported from the instrumented build')"
status=0
python -m pytest -q -p no:cacheprovider "$@" || status=$?
if compgen -G "$work/sanitizer.*" > /dev/null; then
    echo "== sanitizer reports" >&2
    cat "$work"/sanitizer.* >&2
    exit 1
fi
exit "$status"
