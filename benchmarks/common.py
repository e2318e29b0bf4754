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
from contextlib import contextmanager

import torch
from torch import nn


def interleaved_seconds(functions: dict, warmup: int = 1, repeats: int = 3) -> dict:
    """Wall times of each `functions[name]()` in `repeats` rounds (a list per name), after `warmup` untimed rounds.

    Each round calls every function once, in turn, so that a machine that speeds up or slows down during the run
    affects all of them alike and the ratios between them stay meaningful; a ratio computed per round shows its spread.
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
    return times


def interleaved_median_seconds(functions: dict, warmup: int = 1, repeats: int = 3) -> dict:
    """Median over the rounds of [`interleaved_seconds`]."""
    return {name: statistics.median(values) for name, values in interleaved_seconds(functions, warmup, repeats).items()}


def spread(values: list[float], fmt: str = "{:.1%}") -> str:
    """"min-max" of per-round values, for reporting next to their median."""
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


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


def cpu_model() -> str:
    """The CPU's model name and vector units, e.g. "Intel(R) Xeon(R) Processor (x86_64, AVX512, AMX)": runs on
    different machines must not read as one machine (bfloat16 autocast, for one, is several times faster with AMX)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    units = [platform.machine(), torch.backends.cpu.get_cpu_capability()] + (["AMX"] if "amx_bf16" in flags else [])
    return f"{name} ({', '.join(units)})"


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


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


def variance_preserving_init_(*towers: nn.Module) -> None:
    """Re-initializes every linear and convolution of `towers` with std = 1 / sqrt(fan_in) and zero bias.

    Random towers stand in for pretrained ones in the benchmarks, and their timings are only meaningful if their
    activations have the magnitude real weights give. The presets' SAM tower uses transformers' `SamVisionConfig`
    default `initializer_range=1e-10`: its output for a real image peaks near 1e-19, so every matrix product runs on
    denormal numbers, several times slower on a CPU. Fan-in scaling keeps each layer's output variance near its
    input's, as trained weights roughly do.
    """
    for tower in towers:
        for module in tower.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel() if not isinstance(module, nn.ConvTranspose2d) else module.weight[:, 0].numel()
                with torch.no_grad():
                    module.weight.normal_(0.0, fan_in**-0.5)
                    if module.bias is not None:
                        module.bias.zero_()


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict) or hasattr(value, "values"):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def check_activations(name: str, value, collapse_below: float = 1e-4) -> None:
    """Fails loudly if a floating tensor in `value` holds denormals, non-finite numbers, or collapsed to ~0.

    A stage whose inputs or outputs are denormal times the CPU's slow path for tiny numbers, not the model.
    """
    for tensor in _tensors(value):
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        values = tensor.detach().float()
        magnitude = values.abs()
        denormals = int(((magnitude > 0) & (magnitude < torch.finfo(torch.float32).tiny)).sum())
        if denormals or not bool(torch.isfinite(values).all()) or float(magnitude.max()) < collapse_below:
            raise RuntimeError(
                f"{name}: unrealistic activations (shape {tuple(tensor.shape)}, largest |x| = {float(magnitude.max()):.3g}, "
                f"{denormals} denormals); timings would measure the initialization, not the model"
            )


class ActivationGuard:
    """Context manager: checks the inputs and outputs of the named modules on every call (`check_activations`).

    Used for one untimed call before timing, so the hooks cost nothing in the timed rounds.
    """

    def __init__(self, modules: dict):
        self.modules = modules
        self.checked: list[str] = []
        self._handles = []

    def __enter__(self):
        for name, module in self.modules.items():
            def hook(module, args, kwargs, output, name=name):
                check_activations(f"{name} input", (args, kwargs))
                check_activations(f"{name} output", output)
                self.checked.append(name)

            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        return False


class ModuleTimer:
    """Wall time spent inside the named modules during the calls made under `record()` (forward hooks).

    The frozen encoders take 15-25% longer or shorter from one call to the next on a small VM (how much of their memory
    the OS must hand out afresh), so "end-to-end minus encoders timed in another call" mixes two machine states; timing
    the encoders inside the same end-to-end call does not. Outside `record()` the hooks only test one attribute.
    """

    def __init__(self, modules: dict):
        self.calls: list[dict[str, float]] = []  # one {name: seconds} per recorded call
        self._current: dict[str, float] | None = None
        self._starts: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(lambda *args, name=name: self._start(name)))
            self._handles.append(module.register_forward_hook(lambda *args, name=name: self._stop(name)))

    def _start(self, name: str) -> None:
        if self._current is not None:
            self._starts[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        if self._current is not None:
            self._current[name] = self._current.get(name, 0.0) + time.perf_counter() - self._starts.pop(name)

    @contextmanager
    def record(self):
        self._current = {}
        try:
            yield
        finally:
            self.calls.append(self._current)
            self._current = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
