"""Energy per answer: measured where the machine exposes it, estimated where it does not, and always labelled.

Local answers are measured with the CPU package's RAPL counters
(``/sys/class/powercap/intel-rapl:N/energy_uj``, Intel and AMD) read before and
after the generation; the package serves every process, so the reading is
attributed to the gateway by its share of the CPU time spent on the machine
meanwhile (``/proc/stat``). Where no counter is readable (a VM, a container, a
phone), the process's CPU time is multiplied by a configured figure of watts per
busy core. Cloud answers are estimated from their tokens and a configured figure
of joules per token. Every figure says how it was obtained: ``measured-rapl``,
``estimated-cpu`` or ``estimated``.

Each answer carries what was found under ``hybridgate.energy`` (joules and
method per side), ``/metrics`` sums it per route (``hybridgate_energy_joules``)
and the decision log keeps it. An energy budget is not built yet.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Reading:
    process_cpu_s: float
    machine_cpu_s: float | None
    rapl_uj: tuple[int, ...]


class LocalEnergyMeter:
    """Brackets a local generation: :meth:`start` before, :meth:`stop` after."""

    def __init__(self, watts_per_core: float = DEFAULT_WATTS_PER_CORE, *, powercap: Path = POWERCAP, stat: Path = PROC_STAT) -> None:
        self.watts_per_core = watts_per_core
        self.zones = rapl_zones(powercap)
        self.stat = stat

    @property
    def method(self) -> str:
        return "measured-rapl" if self.zones else "estimated-cpu"

    def _machine(self) -> float | None:
        try:
            return busy_cpu_seconds(self.stat)
        except (OSError, ValueError):
            return None

    def start(self) -> Reading:
        # The machine's busy time only attributes a RAPL reading: without counters, one clock read is all it takes.
        machine = self._machine() if self.zones else None
        return Reading(time.process_time(), machine, tuple(z.read() for z in self.zones))

    def stop(self, start: Reading) -> Energy:
        end = self.start()
        process_s = max(0.0, end.process_cpu_s - start.process_cpu_s)
        if self.zones and start.machine_cpu_s is not None and end.machine_cpu_s is not None:
            package_j = sum(counter_delta(a, b, z.max_uj) for a, b, z in zip(start.rapl_uj, end.rapl_uj, self.zones, strict=True)) / 1e6
            machine_s = end.machine_cpu_s - start.machine_cpu_s
            share = min(1.0, process_s / machine_s) if machine_s > 0 else 1.0
            return Energy(package_j * share, "measured-rapl")
        return Energy(process_s * self.watts_per_core, "estimated-cpu")


def add_energy(a: Energy | None, b: Energy) -> Energy:
    """Two measurements of one side (several choices, several drafts): the sum, labelled by the weaker method."""
    if a is None:
        return b
    return Energy(a.joules + b.joules, a.method if a.method == b.method else "estimated-cpu")


def cloud_energy(prompt_tokens: int, completion_tokens: int, joules_per_output_token: float, joules_per_input_token: float) -> Energy:
    """A cloud answer's energy from its tokens: reading the prompt costs far less per token than writing."""
    return Energy(completion_tokens * joules_per_output_token + prompt_tokens * joules_per_input_token, "estimated")
