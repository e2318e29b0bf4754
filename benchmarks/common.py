"""Timing and reporting helpers shared by the benchmark scripts.

Every ratio a script reports is measured within one run of that script, so machine noise between runs cancels.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def interleaved_median_seconds(functions: dict, warmup: int = 1, repeats: int = 3) -> dict:
    """Median wall time of each `functions[name]()` over `repeats` rounds, after `warmup` untimed rounds.

    Each round calls every function once, in turn, so that a machine that speeds up or slows down during the run
    affects all of them alike and the ratios between them stay meaningful.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def median_seconds(function, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of `function()` over `repeats` calls, after `warmup` untimed calls."""
    return interleaved_median_seconds({"function": function}, warmup, repeats)["function"]


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB.

    Linux's `VmHWM` belongs to the process's own address space. `getrusage().ru_maxrss` is not used where VmHWM
    exists: it survives fork + exec, so a child started by a big parent reports the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_rss_of(command: list[str]) -> float:
    """Runs a Python snippet in a fresh interpreter and returns its peak RSS in GiB (printed as the last line)."""
    output = subprocess.run([sys.executable, *command], check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def write_report(name: str, results: dict, rows: list[tuple[str, str, str, str]], output_dir: str) -> str:
    """Writes `<name>.json` and `<name>.md` (a markdown table: measurement, value, target, met) and prints the table."""
    os.makedirs(output_dir, exist_ok=True)
    table = ["| measurement | value | target | met |", "|---|---|---|---|"]
    table += [f"| {label} | {value} | {target} | {met} |" for label, value, target, met in rows]
    markdown = f"Machine: {machine()}\n\n" + "\n".join(table) + "\n"
    with open(os.path.join(output_dir, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump({"machine": machine(), **results}, handle, indent=2)
    with open(os.path.join(output_dir, f"{name}.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)
    return markdown


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"
