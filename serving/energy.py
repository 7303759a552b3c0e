"""Energy per answer: measured where the machine exposes it, estimated where it does not, and always labelled.

Local answers are measured with the CPU package's RAPL counters
(``/sys/class/powercap/intel-rapl:N/energy_uj``, Intel and AMD) read before and
after the generation; the package serves every process, so the reading is
attributed to the gateway by its share of the CPU time spent on the machine
meanwhile (``/proc/stat``). Where no counter is readable (a VM, a container, a
phone), the process's CPU time is multiplied by a configured figure of watts per
busy core. Where the local model runs on an NVIDIA GPU (``local.n_gpu_layers``)
and ``nvidia-ml-py`` is installed, the GPU's own energy counter (NVML) is read
around the generation as well and added. Cloud answers are estimated from their
tokens and a configured figure of joules per token. Every figure says how it was
obtained: ``measured-rapl``, ``measured-nvml``, ``estimated-cpu`` or
``estimated`` (joined with ``+`` where two meters add up).

Each answer carries what was found under ``hybridgate.energy`` (joules and
method per side), ``/metrics`` sums it per route (``hybridgate_energy_joules``),
the decision log keeps it, and each key's daily total feeds the energy budget
(``budgets.default_daily_joules``). :class:`EnergyRate` learns the local model's
joules per token from its measured answers, for the per-request cap's estimate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridgate.serving.smoothing import smoothed

POWERCAP = Path("/sys/class/powercap")
PROC_STAT = Path("/proc/stat")
DEFAULT_WATTS_PER_CORE = 7.5  # a busy laptop or desktop core; set energy.watts_per_core for the device at hand


@dataclass(frozen=True)
class Energy:
    joules: float
    method: str  # measured-rapl | estimated-cpu | estimated

    def as_dict(self) -> dict[str, Any]:
        return {"joules": round(self.joules, 4), "method": self.method}


@dataclass(frozen=True)
class RaplZone:
    """One CPU package's counter: microjoules that wrap around at ``max_uj``."""

    path: Path
    max_uj: int

    def read(self) -> int:
        return int(self.path.read_text().strip())


def rapl_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """The package-level zones whose counters this process may read (``intel-rapl:0``, not ``intel-rapl:0:1``,
    which a package already contains). Linux makes ``energy_uj`` root-only on many systems: then none."""
    zones = []
    for d in sorted(root.glob("intel-rapl:*")) if root.is_dir() else []:
        if d.name.count(":") != 1:
            continue
        counter, limit = d / "energy_uj", d / "max_energy_range_uj"
        try:
            int(counter.read_text().strip())
            max_uj = int(limit.read_text().strip()) if limit.is_file() else 2**32
        except (OSError, ValueError):
            continue
        zones.append(RaplZone(counter, max_uj))
    return zones


def counter_delta(before: int, after: int, max_uj: int) -> int:
    """Microjoules between two readings of a counter that wrapped at most once."""
    return after - before if after >= before else after + max_uj - before


def busy_cpu_seconds(stat: Path = PROC_STAT) -> float:
    """CPU seconds the whole machine has spent busy (every core; idle and iowait left out)."""
    fields = stat.read_text().split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"{stat}: no aggregate cpu line")
    jiffies = [int(v) for v in fields[1:]]
    idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class NvmlMeter:
    """One GPU's energy counter through NVML (millijoules since the driver loaded; Volta and newer).

    The GPU serves every process on it, so a reading is attributed to the
    gateway by its share of the processes computing there (all of it when it is
    the only one, none when it is not among them). ``nvml`` is the ``pynvml``
    module, or anything with the same four functions (tests pass recorded
    readings).
    """

    def __init__(self, nvml: Any, index: int = 0, pid: int | None = None) -> None:
        self.nvml = nvml
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.pid = os.getpid() if pid is None else pid
        self.read()  # a GPU without the counter raises here, and is not metered

    @classmethod
    def open(cls, index: int = 0) -> NvmlMeter | None:
        """The meter of GPU ``index``, or None where NVML, the GPU or its energy counter is missing."""
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            return cls(pynvml, index)
        except Exception:  # noqa: BLE001 - no NVML, no driver, no GPU, or a GPU older than the counter
            return None

    def read(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def share(self) -> float:
        try:
            pids = {int(p.pid) for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)}
        except Exception:  # noqa: BLE001 - a driver that cannot list processes: count the GPU as ours
            return 1.0
        return 1.0 / len(pids) if self.pid in pids else 0.0


@dataclass(frozen=True)
class Reading:
    process_cpu_s: float
    machine_cpu_s: float | None
    rapl_uj: tuple[int, ...]
    gpu_mj: int | None = None


class LocalEnergyMeter:
    """Brackets a local generation: :meth:`start` before, :meth:`stop` after."""

    def __init__(
        self,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        *,
        powercap: Path = POWERCAP,
        stat: Path = PROC_STAT,
        gpu: NvmlMeter | None = None,
    ) -> None:
        self.watts_per_core = watts_per_core
        self.zones = rapl_zones(powercap)
        self.stat = stat
        self.gpu = gpu

    @property
    def method(self) -> str:
        cpu = "measured-rapl" if self.zones else "estimated-cpu"
        return cpu + ("+measured-nvml" if self.gpu is not None else "")

    def _machine(self) -> float | None:
        try:
            return busy_cpu_seconds(self.stat)
        except (OSError, ValueError):
            return None

    def start(self) -> Reading:
        # The machine's busy time only attributes a RAPL reading: without counters, one clock read is all it takes.
        machine = self._machine() if self.zones else None
        gpu = self.gpu.read() if self.gpu is not None else None
        return Reading(time.process_time(), machine, tuple(z.read() for z in self.zones), gpu)

    def stop(self, start: Reading) -> Energy:
        end = self.start()
        process_s = max(0.0, end.process_cpu_s - start.process_cpu_s)
        if self.zones and start.machine_cpu_s is not None and end.machine_cpu_s is not None:
            package_j = sum(counter_delta(a, b, z.max_uj) for a, b, z in zip(start.rapl_uj, end.rapl_uj, self.zones, strict=True)) / 1e6
            machine_s = end.machine_cpu_s - start.machine_cpu_s
            share = min(1.0, process_s / machine_s) if machine_s > 0 else 1.0
            cpu = Energy(package_j * share, "measured-rapl")
        else:
            cpu = Energy(process_s * self.watts_per_core, "estimated-cpu")
        if self.gpu is None or start.gpu_mj is None or end.gpu_mj is None:
            return cpu
        gpu_j = max(0, end.gpu_mj - start.gpu_mj) / 1e3 * self.gpu.share()
        return Energy(cpu.joules + gpu_j, f"{cpu.method}+measured-nvml")


def add_energy(a: Energy | None, b: Energy) -> Energy:
    """Two measurements of one side (several choices, several drafts): the sum, labelled by the weaker method."""
    if a is None:
        return b
    return Energy(a.joules + b.joules, a.method if a.method == b.method else "estimated-cpu")


class EnergyRate:
    """The local model's joules per token, learnt from its measured answers (a moving average), so that a
    request's energy can be estimated before it runs. Reading a prompt token costs about
    ``input_ratio`` of writing one, as configured for the start."""

    def __init__(self, joules_per_output_token: float, joules_per_input_token: float, alpha: float = 0.2) -> None:
        self.per_output = joules_per_output_token
        self.input_ratio = joules_per_input_token / joules_per_output_token if joules_per_output_token > 0 else 0.1
        self.alpha = alpha
        self.measured = 0

    def observe(self, joules: float, prompt_tokens: int, completion_tokens: int) -> None:
        work = completion_tokens + self.input_ratio * prompt_tokens
        if work <= 0 or not joules >= 0:
            return
        rate = joules / work
        self.per_output = smoothed(None if self.measured == 0 else self.per_output, rate, self.alpha)
        self.measured += 1

    def expected(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.per_output * (completion_tokens + self.input_ratio * prompt_tokens)


def cloud_energy(prompt_tokens: int, completion_tokens: int, joules_per_output_token: float, joules_per_input_token: float) -> Energy:
    """A cloud answer's energy from its tokens: reading the prompt costs far less per token than writing."""
    return Energy(completion_tokens * joules_per_output_token + prompt_tokens * joules_per_input_token, "estimated")
