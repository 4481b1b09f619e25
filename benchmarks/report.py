"""Markdown tables for a benchmark run.

A time cell is the median time per call followed by ``±`` half the
interquartile range, in percent of the median. A ratio cell is the ratio of
two medians followed, in parentheses, by the first and third quartiles of the
per-round ratios (sample i of one contender divided by sample i of the
other, taken in the same round). A dash marks a contender that did not run.
"Others' CPUs" is the average number of CPUs that other processes kept busy
while the row was measured: well above 0, the row's times are disturbed.
"""

MISSING = "-"


def format_seconds(seconds):
    """Return a duration with a unit that keeps three or four significant digits."""
    if seconds is None:
        return MISSING
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def format_figure(figure):
    if figure is None:
        return MISSING
    median = figure["median"]
    if median <= 0:
        return format_seconds(median)
    half_spread = 50.0 * (figure["q3"] - figure["q1"]) / median
    return f"{format_seconds(median)} ±{half_spread:.1f}%"


def format_ratio(ratio):
    if ratio is None:
        return MISSING
    text = f"{ratio['ratio']:.2f}"
    if "paired_q1" in ratio:
        text += f" ({ratio['paired_q1']:.2f}–{ratio['paired_q3']:.2f})"
    return text


def format_bytes(count):
    if count is None:
        return MISSING
    if count < 1024:
        return f"{count:.0f} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.2f} MiB"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def _other_cpus(value):
    return MISSING if value is None else f"{value:.2f}"


def _figure(comparison, name):
    return format_figure(comparison["contenders"].get(name))


def _ratio(comparison, name):
    return format_ratio(comparison["ratios"].get(name))


def ops_table(comparisons):
    header = [
        "operation", "threads", "nnback", "reference", "torch", "numpy copy",
        "nnback/reference", "nnback/torch", "nnback/copy", "others' CPUs",
    ]
    rows = []
    for comparison in comparisons:
        rows.append([
            comparison["case"], comparison["threads"],
            _figure(comparison, "nnback"), _figure(comparison, "reference"),
            _figure(comparison, "torch"), _figure(comparison, "numpy copy"),
            _ratio(comparison, "nnback/reference"), _ratio(comparison, "nnback/torch"),
            _ratio(comparison, "nnback/numpy copy"),
            _other_cpus(comparison["cpu_activity"]["other_processes_cpus"]),
        ])
    return markdown_table(header, rows)


def train_table(comparisons):
    header = [
        "B", "threads", "nnback", "reference", "torch", "GEMM floor", "call overhead",
        "floor net", "nnback/floor net", "nnback/torch", "nnback/reference", "others' CPUs",
    ]
    rows = []
    for comparison in comparisons:
        net = comparison["derived"].get("gemm floor net")
        net_ratio = comparison["derived"].get("nnback/gemm floor net")
        rows.append([
            comparison["batch_size"], comparison["threads"],
            _figure(comparison, "nnback"), _figure(comparison, "reference"), _figure(comparison, "torch"),
            _figure(comparison, "gemm floor"), _figure(comparison, "sgemm call overhead"),
            format_seconds(net and net["median"]), format_ratio(net_ratio),
            _ratio(comparison, "nnback/torch"), _ratio(comparison, "nnback/reference"),
            _other_cpus(comparison["cpu_activity"]["other_processes_cpus"]),
        ])
    return markdown_table(header, rows)


def epoch_table(comparisons):
    header = ["data", "threads", "nnback", "torch", "sklearn", "nnback/torch", "nnback/sklearn", "others' CPUs"]
    rows = []
    for comparison in comparisons:
        rows.append([
            comparison["case"], comparison["threads"],
            _figure(comparison, "nnback"), _figure(comparison, "torch"), _figure(comparison, "sklearn"),
            _ratio(comparison, "nnback/torch"), _ratio(comparison, "nnback/sklearn"),
            _other_cpus(comparison["cpu_activity"]["other_processes_cpus"]),
        ])
    return markdown_table(header, rows)


def alloc_table(entries):
    header = [
        "contender", "B", "new live blocks/step", "new live bytes/step", "transient peak/step",
        "allocating calls/step", "allocated bytes/step", "new arrays >= 1 KiB",
    ]
    rows = []
    for entry in entries:
        if entry["contender"] == "nnback":
            rows.append([
                "nnback", entry["batch_size"],
                f"{entry['new_blocks_per_step']:.2f}", format_bytes(entry["new_bytes_per_step"]),
                format_bytes(entry["transient_peak_bytes"]),
                f"{len(entry['spikes_of_1kib_or_more'])} spikes >= 1 KiB", MISSING,
                "yes" if entry["new_arrays_of_1kib_or_more"] else "no",
            ])
        else:
            rows.append([
                entry["contender"], entry["batch_size"], MISSING, MISSING, MISSING,
                f"{entry['allocating_operators_per_step']:.1f} operators",
                format_bytes(entry["bytes_per_step"]),
                "yes" if entry["new_arrays_of_1kib_or_more"] else "no",
            ])
    return markdown_table(header, rows)


def targets_table(targets):
    header = ["target", "threads", "ratio", "limit", "result", "others' CPUs"]
    rows = []
    for target in targets:
        if target["met"] is None:
            result = "not evaluated"
        else:
            result = "met" if target["met"] else "missed"
        ratio = MISSING if target["ratio"] is None else f"{target['ratio']:.3f}"
        limit = MISSING if target["limit"] is None else f"{target['limit']:.2f}"
        rows.append([
            target["target"], target["threads"], ratio, limit, result,
            _other_cpus(target["other_processes_cpus"]),
        ])
    return markdown_table(header, rows)


def machine_lines(machine):
    lines = [
        f"- CPU: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs "
        f"({machine['available_cpus']} available to this process, "
        f"{machine['physical_cores'] or 'unknown'} physical cores reported)",
        f"- platform: {machine['platform']}, Python {machine['python']}",
        "- versions: " + ", ".join(
            f"{name} {version or MISSING}" for name, version in machine["versions"].items()
        ),
    ]
    source = machine["nnback_source"]
    if source["commit"] is None:
        lines.append(f"- nnback imported from {source['path']} (not a git checkout)")
    else:
        changes = "with local changes" if source["modified"] else "no local changes"
        lines.append(f"- nnback imported from {source['path']}: commit {source['commit']}, {changes}")
    for pool in machine["thread_pools"]:
        details = [pool["internal_api"], f"version {pool['version'] or 'unknown'}"]
        if pool.get("architecture"):
            details.append(f"kernel {pool['architecture']}")
        if pool.get("threading_layer"):
            details.append(f"threading {pool['threading_layer']}")
        details.append(f"{pool['num_threads']} threads")
        lines.append(f"- {pool['user_api']}: {pool['filepath']} ({', '.join(details)})")
    if machine["openblas_environment"]:
        lines.append("- environment: " + ", ".join(
            f"{name}={value}" for name, value in machine["openblas_environment"].items()
        ))
    return lines


def _format_load(value):
    return MISSING if value is None else f"{value:.2f}"


def render_machine(results):
    """Return the machine description as a Markdown section."""
    lines = ["## Machine", "", *machine_lines(results["machine"])]
    lines.append(f"- 1-minute load average at the start: {_format_load(results['load_average']['start'])}")
    return "\n".join(lines) + "\n"


def render_sections(results):
    """Return one Markdown table per section that ran, then the targets."""
    parts = []
    sections = results["sections"]
    titles = {
        "ops": ("Operations, forward + backward", ops_table),
        "train": ("Training step (forward, loss, backward, SGD update)", train_table),
        "epoch": ("One epoch", epoch_table),
        "alloc": ("Allocations per steady-state training step", alloc_table),
    }
    for key, (title, table) in titles.items():
        if key in sections:
            parts += [f"## {title}", "", table(sections[key]), ""]
    if results.get("targets"):
        parts += ["## Targets", "", targets_table(results["targets"]), ""]
    parts.append(f"1-minute load average at the end: {_format_load(results['load_average']['end'])}")
    return "\n".join(parts)
