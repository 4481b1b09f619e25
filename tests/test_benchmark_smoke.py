"""Smoke tests of benchmarks/run.py: a quick run finishes and writes complete JSON.

The timings of a quick run mean nothing, so no test looks at their size:
they only have to be positive.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPOSITORY_ROOT, "benchmarks", "run.py")
SECTIONS = ("ops", "train", "epoch", "alloc")
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def run_benchmark(json_path, *options):
    return subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--json", str(json_path), *options],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    json_path = tmp_path_factory.mktemp("benchmark") / "results.json"
    completed = run_benchmark(json_path)
    results = json.loads(json_path.read_text()) if json_path.exists() else None
    return completed, results


@pytest.fixture(scope="module")
def results(quick_run):
    completed, results = quick_run
    if completed.returncode != 0 or results is None:
        pytest.fail(f"benchmarks/run.py --quick failed:\n{completed.stderr[-4000:]}")
    return results


def comparisons(results):
    for section in ("ops", "train", "epoch"):
        yield from results["sections"][section]


def test_quick_run_exits_zero(quick_run):
    completed, _ = quick_run
    assert completed.returncode == 0, completed.stderr[-4000:]


def test_quick_run_prints_tables(quick_run):
    completed, _ = quick_run
    assert "## Machine" in completed.stdout
    assert "| operation | threads | nnback |" in completed.stdout
    assert "## Targets" in completed.stdout


@pytest.mark.parametrize("section", SECTIONS)
def test_json_has_section(results, section):
    assert results["sections"].get(section), f"section {section!r} is missing or empty"


def test_json_describes_machine(results):
    machine = results["machine"]
    assert machine["cpu_model"]
    assert machine["logical_cpus"] >= 1
    assert machine["versions"]["numpy"]
    assert any(pool["user_api"] == "blas" for pool in machine["thread_pools"])


def test_ops_cover_every_operation(results):
    cases = {(comparison["kind"], comparison["threads"]) for comparison in results["sections"]["ops"]}
    for threads in results["settings"]["threads"]:
        assert ("linear", threads) in cases
        assert ("activation", threads) in cases
        assert ("softmax_cross_entropy", threads) in cases
    activations = {comparison.get("activation") for comparison in results["sections"]["ops"]}
    assert {"sigmoid", "tanh", "relu"} <= activations


def test_train_covers_batches_and_threads(results):
    measured = {(comparison["batch_size"], comparison["threads"]) for comparison in results["sections"]["train"]}
    expected = {
        (batch_size, threads)
        for batch_size in results["settings"]["step_batch_sizes"]
        for threads in results["settings"]["threads"]
    }
    assert measured == expected


def test_train_has_floor_and_overhead(results):
    for comparison in results["sections"]["train"]:
        assert "gemm floor" in comparison["contenders"]
        assert "sgemm call overhead" in comparison["contenders"]
        assert "gemm floor net" in comparison["derived"]


def test_gemm_floor_reuses_outputs(results):
    for batch_size, check in results["gemm_floor_checks"].items():
        assert check["ok"], f"B={batch_size}: {check['products']}"


def test_timings_positive(results):
    for comparison in comparisons(results):
        for name, figure in comparison["contenders"].items():
            label = f"{comparison['case']} ({comparison['threads']} threads), {name}"
            assert figure["median"] > 0, label
            assert figure["min"] > 0, label
            assert figure["n"] == len(comparison["samples"][name]), label


def test_samples_positive(results):
    for comparison in comparisons(results):
        for name, samples in comparison["samples"].items():
            assert samples, f"{comparison['case']}, {name}: no samples"
            assert min(samples) > 0, f"{comparison['case']}, {name}: {samples}"


def test_comparisons_record_cpu_activity(results):
    for comparison in comparisons(results):
        activity = comparison["cpu_activity"]
        assert set(activity) == {"this_process_cpus", "other_processes_cpus"}, comparison["case"]
        if activity["other_processes_cpus"] is not None:
            assert activity["other_processes_cpus"] >= 0, comparison["case"]


def test_nnback_ratios_present(results):
    for comparison in comparisons(results):
        assert "nnback" in comparison["contenders"], comparison["case"]
        for name in comparison["contenders"]:
            if name not in ("nnback", "sgemm call overhead"):
                assert comparison["ratios"][f"nnback/{name}"]["ratio"] > 0, (comparison["case"], name)


def test_optional_peers_match_installation(results):
    for comparison in comparisons(results):
        assert ("torch" in comparison["contenders"]) == HAS_TORCH, comparison["case"]
    for comparison in results["sections"]["epoch"]:
        assert ("sklearn" in comparison["contenders"]) == HAS_SKLEARN


def test_alloc_reports_nnback(results):
    entries = [entry for entry in results["sections"]["alloc"] if entry["contender"] == "nnback"]
    assert [entry["batch_size"] for entry in entries] == results["settings"]["step_batch_sizes"]
    for entry in entries:
        assert entry["new_bytes_per_step"] >= 0
        assert entry["transient_peak_bytes"] >= 0
        assert isinstance(entry["new_arrays_of_1kib_or_more"], bool)


def test_targets_listed(results):
    targets = results["targets"]
    assert targets
    for target in targets:
        assert target["met"] in (True, False, None), target


def test_run_without_peers(tmp_path):
    json_path = tmp_path / "results.json"
    completed = run_benchmark(json_path, "--only", "ops,epoch", "--threads", "1", "--no-torch", "--no-sklearn")
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads(json_path.read_text())
    assert sorted(results["sections"]) == ["epoch", "ops"]
    for comparison in results["sections"]["ops"] + results["sections"]["epoch"]:
        assert "torch" not in comparison["contenders"]
        assert "sklearn" not in comparison["contenders"]
    torch_column = [line.split("|")[5].strip() for line in completed.stdout.splitlines() if line.startswith("| linear")]
    assert torch_column
    assert set(torch_column) == {"-"}


def test_rejects_unknown_section(tmp_path):
    completed = run_benchmark(tmp_path / "results.json", "--only", "nothing")
    assert completed.returncode == 2
    assert "--only" in completed.stderr
