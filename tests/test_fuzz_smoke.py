"""Smoke tests of the fuzz harness in fuzz/: every target runs a few inputs.

The harness is not installed with the package, so its folder is put on
sys.path. Long runs are made with ``python fuzz/run.py``.
"""

import pathlib
import subprocess
import sys

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from fuzz import run  # noqa: E402

SMOKE_INPUTS = 25


def describe(failures):
    return "\n\n".join(f"{signature}:\n{details}" for signature, (_, _, details) in failures.items())


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("target", sorted(run.TARGETS))
def test_fuzz_target_smoke(target):
    test = run.load_target(target)

    executions, failures = run.run_inputs(test, seed=0, max_inputs=SMOKE_INPUTS)

    assert executions == SMOKE_INPUTS
    assert not failures, describe(failures)


def test_planted_failure_reported_and_replayed():
    test = run.load_target("selftest-failure")

    _, failures = run.run_inputs(test, seed=0, max_inputs=40)

    assert list(failures) == ["selftest: planted failure"]
    count, buffer, details = failures["selftest: planted failure"]
    assert count >= 1
    assert "raised on purpose" in details
    assert run.run_one(test, buffer)[0] == "selftest: planted failure"


@pytest.mark.parametrize(
    "target, expected",
    [
        pytest.param("selftest-crash", "child process killed by signal SIGABRT", id="crash"),
        pytest.param("selftest-hang", "selftest-hang: hang (no progress for 2.0 s)", id="hang"),
    ],
)
def test_runner_saves_input_of_dead_child(tmp_path, target, expected):
    # --max-restarts 0 ends the run at the first crash or hang, and --seconds
    # only bounds the run if the target never misbehaves.
    command = [
        sys.executable, str(REPOSITORY / "fuzz" / "run.py"), "--target", target,
        "--seconds", "300", "--max-restarts", "0", "--hang-timeout", "2",
        "--artifacts", str(tmp_path),
    ]

    completed = subprocess.run(command, capture_output=True, text=True, check=False)

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert expected in completed.stdout
    saved = sorted(tmp_path.glob("*.bin"))
    assert len(saved) == 1
    # The saved buffer is the input that was running when the child died or hung.
    assert saved[0].stat().st_size > 0
    assert "on input" in saved[0].with_suffix(".txt").read_text()
