"""Description of the machine and the software versions behind a benchmark run."""

import importlib.metadata
import os
import platform
import subprocess
import time

from threadpoolctl import threadpool_info


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _physical_cores():
    # Counts distinct (physical id, core id) pairs. Virtual machines often
    # report one core per virtual CPU here.
    cores = set()
    physical_id = core_id = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical_id = value.strip()
                elif key == "core id":
                    core_id = value.strip()
                elif not key and core_id is not None:
                    cores.add((physical_id, core_id))
                    physical_id = core_id = None
    except OSError:
        return None
    if core_id is not None:
        cores.add((physical_id, core_id))
    return len(cores) or None


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _source_state(package_directory):
    """Return where the imported nnback lives, and its git commit and local changes if it is in a checkout.

    ``commit`` and ``modified`` are None for an installed copy outside a git
    checkout, such as a regular (not editable) install in site-packages.
    """
    state = {"path": package_directory, "commit": None, "modified": None}
    try:
        commit = subprocess.run(
            ["git", "-C", package_directory, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        # The pathspec "." is the package directory itself, wherever the checkout puts it.
        changes = subprocess.run(
            ["git", "-C", package_directory, "status", "--porcelain", "--", "."],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return state
    state["commit"] = commit
    state["modified"] = bool(changes)
    return state


def describe_machine(nnback_module):
    """Return the CPU, core counts, BLAS and OpenMP libraries and package versions as a dict."""
    pools = []
    for pool in threadpool_info():
        pools.append({
            "user_api": pool.get("user_api"),
            "internal_api": pool.get("internal_api"),
            "prefix": pool.get("prefix"),
            "version": pool.get("version"),
            "architecture": pool.get("architecture"),
            "threading_layer": pool.get("threading_layer"),
            "num_threads": pool.get("num_threads"),
            "filepath": pool.get("filepath"),
        })

    try:
        available_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        available_cpus = os.cpu_count()

    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "available_cpus": available_cpus,
        "physical_cores": _physical_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "numpy": _version("numpy"),
            "scipy": _version("scipy"),
            "torch": _version("torch"),
            "scikit-learn": _version("scikit-learn"),
            "threadpoolctl": _version("threadpoolctl"),
            "nnback": getattr(nnback_module, "__version__", None),
        },
        "nnback_source": _source_state(os.path.dirname(os.path.abspath(nnback_module.__file__))),
        "openblas_environment": {
            name: os.environ[name]
            for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
            if name in os.environ
        },
        "thread_pools": pools,
    }


def load_average():
    """Return the 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _busy_ticks_all_cpus():
    # /proc/stat's first line: cpu user nice system idle iowait irq softirq steal ...
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def _busy_ticks_this_process():
    # utime and stime of all threads: fields 14 and 15 of /proc/self/stat,
    # counted after the parenthesized command name.
    with open("/proc/self/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class CpuActivity:
    """Measure how many CPUs this process and all other processes kept busy during a block.

    The figures are averages over the block, in CPUs (1.0 = one CPU busy the
    whole time), from clock ticks in /proc, so blocks shorter than a few
    tenths of a second give coarse values. Steal time (CPU taken by the
    hypervisor) counts as other processes. Where /proc is missing, both
    figures are None.
    """

    def __enter__(self):
        try:
            self._start = (time.perf_counter(), _busy_ticks_all_cpus(), _busy_ticks_this_process())
        except (OSError, ValueError, IndexError):
            self._start = None
        self.result = {"this_process_cpus": None, "other_processes_cpus": None}
        return self

    def __exit__(self, *exception):
        if self._start is None:
            return False
        try:
            end = (time.perf_counter(), _busy_ticks_all_cpus(), _busy_ticks_this_process())
        except (OSError, ValueError, IndexError):
            return False
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        elapsed = end[0] - self._start[0]
        all_busy = (end[1] - self._start[1]) / ticks_per_second / elapsed
        own_busy = (end[2] - self._start[2]) / ticks_per_second / elapsed
        self.result = {
            "this_process_cpus": own_busy,
            "other_processes_cpus": max(all_busy - own_busy, 0.0),
        }
        return False
