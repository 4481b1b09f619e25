"""Run the nnback fuzz targets for a bounded time each.

Usage::

    python fuzz/run.py --seconds 40                  # every target, 40 s each
    python fuzz/run.py --seconds 600 --target load --seed 7
    python fuzz/run.py --replay fuzz/artifacts/load-0123abcd.bin --target load

Each target runs in a child process that feeds seeded random byte buffers to a
Hypothesis test through ``fuzz_one_input``. A buffer determines its input
completely, so every failure is saved as a ``.bin`` file that ``--replay``
runs again, with a ``.txt`` file that contains the traceback. Before each input
the child writes the buffer and its index to a state file. The child may die
(a segmentation fault or an abort), or make no progress for ``--hang-timeout``
seconds and be killed. Then the runner saves that buffer as the failing input
and starts a new child for the rest of the target's time.

The runner prints one line per target (executions, distinct failures, time)
and exits with status 1 if any target failed.
"""

import argparse
import hashlib
import importlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

# Target name to (module, Hypothesis test). The selftest targets check that the
# runner itself reports crashes and hangs, and are not run by default.
TARGETS = {
    "functional": ("fuzz.target_functional", "fuzz_functional"),
    "layers": ("fuzz.target_layers", "fuzz_layers"),
    "load": ("fuzz.target_load", "fuzz_load"),
    "datasets": ("fuzz.target_datasets", "fuzz_datasets"),
}
SELFTEST_TARGETS = {
    "selftest-crash": ("fuzz.target_selftest", "fuzz_crash"),
    "selftest-hang": ("fuzz.target_selftest", "fuzz_hang"),
    "selftest-failure": ("fuzz.target_selftest", "fuzz_failure"),
}

DEFAULT_ARTIFACTS = os.path.join(REPOSITORY, "fuzz", "artifacts")
# Buffer sizes in bytes. Hypothesis stops drawing when a buffer runs out, so
# larger buffers reach larger inputs and longer call sequences.
BUFFER_SIZES = (256, 1024, 4096, 16384)
# The state file starts with the 0-based index of the current input.
_INDEX = struct.Struct("<q")
POLL_SECONDS = 0.2
# Time a child may take to import its target before it is reported as hung.
STARTUP_SECONDS = 120.0


def load_target(name):
    """Return the Hypothesis test of the target ``name``."""
    known = {**TARGETS, **SELFTEST_TARGETS}
    if name not in known:
        raise SystemExit(f"unknown target {name!r}: expected one of {', '.join(known)}")
    module_name, test_name = known[name]
    return getattr(importlib.import_module(module_name), test_name)


def run_one(test, buffer):
    """Run one input and return None, or (signature, details) if it failed."""
    from fuzz.common import FuzzFailure

    try:
        test.hypothesis.fuzz_one_input(buffer)
    except FuzzFailure as failure:
        return failure.signature, traceback.format_exc()
    except Exception as error:
        # An error in the target itself, outside call_checked, is a harness bug.
        return f"harness: {type(error).__name__}: {error}", traceback.format_exc()
    return None


def run_inputs(test, seed, *, deadline=None, max_inputs=None, before_input=None):
    """Run seeded random inputs until ``deadline`` (time.monotonic) or ``max_inputs``.

    Returns (executions, failures), where failures maps each signature to
    (count, first failing buffer, details). ``before_input(index, buffer)`` is
    called before each input runs.
    """
    rng = random.Random(seed)
    executions = 0
    failures = {}
    while True:
        if max_inputs is not None and executions >= max_inputs:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        buffer = rng.randbytes(rng.choice(BUFFER_SIZES))
        if before_input is not None:
            before_input(executions, buffer)
        outcome = run_one(test, buffer)
        executions += 1
        if outcome is not None:
            signature, details = outcome
            count, first, first_details = failures.get(signature, (0, buffer, details))
            failures[signature] = (count + 1, first, first_details)
    return executions, failures


def save_artifact(directory, target, kind, buffer, details):
    """Write the failing ``buffer`` and a description, and return the .bin path."""
    os.makedirs(directory, exist_ok=True)
    digest = hashlib.sha256(buffer).hexdigest()[:12]
    stem = os.path.join(directory, f"{target}-{kind}-{digest}")
    with open(stem + ".bin", "wb") as file:
        file.write(buffer)
    with open(stem + ".txt", "w", encoding="utf-8") as file:
        file.write(f"target: {target}\nreplay: python fuzz/run.py --replay {stem}.bin "
                   f"--target {target}\n\n{details}\n")
    return stem + ".bin"


# ---------------------------------------------------------------------------
# Child process
# ---------------------------------------------------------------------------


def child_main(arguments):
    """Run one target until the deadline, writing progress and failures to the state directory."""
    # NumPy warns about overflow and invalid casts, which many inputs cause on purpose.
    warnings.simplefilter("ignore")
    test = load_target(arguments.target)
    state = arguments.state_dir
    descriptor = os.open(os.path.join(state, "current.bin"), os.O_RDWR | os.O_CREAT, 0o644)
    failures_path = os.path.join(state, "failures.jsonl")
    recorded = set()

    def before_input(index, buffer):
        record = _INDEX.pack(index) + buffer
        os.pwrite(descriptor, record, 0)
        os.ftruncate(descriptor, len(record))

    # Failures are written as they happen, so that a later crash loses none.
    # The deadline is wall-clock time, shared with the parent, so that the
    # start-up of the child counts against the target's time.
    deadline = time.monotonic() + (arguments.deadline - time.time())
    rng = random.Random(arguments.seed)
    executions = 0
    while time.monotonic() < deadline:
        # Chunks of inputs keep the per-failure bookkeeping simple.
        count, failures = run_inputs(
            test, rng.getrandbits(64), deadline=deadline, max_inputs=200,
            before_input=lambda index, buffer, done=executions: before_input(done + index, buffer),
        )
        executions += count
        for signature, (_, buffer, details) in failures.items():
            if signature in recorded:
                continue
            recorded.add(signature)
            path = save_artifact(arguments.artifacts, arguments.target, "failure", buffer, details)
            with open(failures_path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"signature": signature, "artifact": path}) + "\n")
    with open(os.path.join(state, "result.json"), "w", encoding="utf-8") as file:
        json.dump({"executions": executions}, file)
    os.close(descriptor)


# ---------------------------------------------------------------------------
# Parent process
# ---------------------------------------------------------------------------


def _read_state(path):
    """Return (index, buffer) of the input that the child was running, or (None, b"")."""
    try:
        with open(path, "rb") as file:
            record = file.read()
    except FileNotFoundError:
        return None, b""
    if len(record) < _INDEX.size:
        return None, b""
    return _INDEX.unpack_from(record)[0], record[_INDEX.size:]


def _describe_exit(returncode):
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _run_child(arguments, target, seed, seconds, state):
    """Run one child and return (executions, failures as {signature: artifact}, finished)."""
    command = [
        sys.executable, os.path.abspath(__file__), "--child", "--target", target,
        "--seed", str(seed), "--deadline", repr(time.time() + seconds), "--state-dir", state,
        "--artifacts", arguments.artifacts,
    ]
    current = os.path.join(state, "current.bin")
    stderr_path = os.path.join(state, "stderr.txt")
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        last_index, last_progress = None, time.monotonic()
        hung = False
        while child.poll() is None:
            time.sleep(POLL_SECONDS)
            index, _ = _read_state(current)
            now = time.monotonic()
            # Start-up (imports) is not an input, so it gets its own, longer limit.
            limit = arguments.hang_timeout if index is not None else STARTUP_SECONDS
            if index != last_index:
                last_index, last_progress = index, now
            elif now - last_progress > max(limit, arguments.hang_timeout):
                child.kill()
                child.wait()
                hung = True
    returncode = child.returncode

    failures = {}
    failures_path = os.path.join(state, "failures.jsonl")
    if os.path.exists(failures_path):
        with open(failures_path, encoding="utf-8") as file:
            for line in file:
                record = json.loads(line)
                failures[record["signature"]] = record["artifact"]

    result_path = os.path.join(state, "result.json")
    if not hung and returncode == 0 and os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as file:
            return json.load(file)["executions"], failures, True

    # The child died or hung: the state file contains the input it was running.
    index, buffer = _read_state(current)
    with open(stderr_path, "rb") as file:
        stderr_tail = file.read()[-4000:].decode("utf-8", "replace")
    if hung:
        signature = f"{target}: hang (no progress for {arguments.hang_timeout} s)"
        kind = "hang"
    else:
        signature = f"{target}: child process {_describe_exit(returncode)}"
        kind = "crash"
    if index is None:
        details = f"{signature} before the first input\n\nstderr:\n{stderr_tail}"
        failures[signature] = save_artifact(arguments.artifacts, target, kind, b"", details)
        return 0, failures, False
    details = f"{signature} on input {index}\n\nstderr:\n{stderr_tail}"
    failures[signature] = save_artifact(arguments.artifacts, target, kind, buffer, details)
    # Inputs 0 .. index - 1 completed.
    return index, failures, False


def fuzz_one_target(arguments, target):
    """Fuzz ``target`` for ``arguments.seconds`` and return (executions, failures, seconds)."""
    start = time.monotonic()
    deadline = start + arguments.seconds
    executions = 0
    failures = {}
    restarts = 0
    with tempfile.TemporaryDirectory(prefix=f"nnback-fuzz-{target}-") as scratch:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (restarts > 0 and remaining < 1):
                break
            state = os.path.join(scratch, f"child-{restarts}")
            os.makedirs(state)
            # Each restarted child draws a different stream of inputs.
            seed = arguments.seed * 1_000_003 + restarts
            count, child_failures, finished = _run_child(arguments, target, seed, remaining, state)
            executions += count
            for signature, artifact in child_failures.items():
                failures.setdefault(signature, artifact)
            restarts += 1
            if finished:
                break
            if restarts > arguments.max_restarts:
                break
    return executions, failures, time.monotonic() - start


def replay(arguments):
    """Run one saved buffer in this process and print the outcome."""
    os.environ["NNBACK_FUZZ_VERBOSE"] = "1"
    test = load_target(arguments.target)
    with open(arguments.replay, "rb") as file:
        buffer = file.read()
    outcome = run_one(test, buffer)
    if outcome is None:
        print(f"{arguments.replay}: passes")
        return 0
    signature, details = outcome
    print(details)
    print(f"{arguments.replay}: FAILED: {signature}")
    return 1


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description="Fuzz nnback for a bounded time per target.")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="time per target in seconds (default 30)")
    parser.add_argument("--target", action="append",
                        help=f"target to run, repeatable (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the input stream (default 0)")
    parser.add_argument("--hang-timeout", type=float, default=60.0,
                        help="seconds without a finished input after which the child is "
                             "killed and the input reported as a hang (default 60)")
    parser.add_argument("--max-restarts", type=int, default=20,
                        help="children started per target after crashes or hangs (default 20)")
    parser.add_argument("--artifacts", default=DEFAULT_ARTIFACTS,
                        help="folder for failing inputs (default fuzz/artifacts)")
    parser.add_argument("--replay", metavar="FILE",
                        help="run the saved input FILE of --target once and print the outcome")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.seconds <= 0:
        parser.error(f"--seconds must be positive, got {arguments.seconds}")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    if arguments.child:
        arguments.target = arguments.target[0]
        child_main(arguments)
        return 0
    if arguments.replay:
        if not arguments.target or len(arguments.target) != 1:
            raise SystemExit("--replay needs exactly one --target")
        arguments.target = arguments.target[0]
        return replay(arguments)

    targets = arguments.target or list(TARGETS)
    for target in targets:
        load_target(target)
    total_failures = 0
    print(f"fuzzing {', '.join(targets)} for {arguments.seconds:g} s each, seed {arguments.seed}")
    for target in targets:
        executions, failures, seconds = fuzz_one_target(arguments, target)
        total_failures += len(failures)
        print(f"{target}: {executions} executions, {len(failures)} distinct failures, "
              f"{seconds:.1f} s", flush=True)
        for signature, artifact in sorted(failures.items()):
            print(f"  FAILED {signature}\n    input: {artifact}", flush=True)
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
