"""Energy meters on recorded counter files (no machine here exposes RAPL) and on the estimated path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hybridgate.serving.energy import LocalEnergyMeter, busy_cpu_seconds, cloud_energy, counter_delta, rapl_zones

TICK = os.sysconf("SC_CLK_TCK")


def write_stat(path: Path, busy_jiffies: int, idle_jiffies: int) -> None:
    # user nice system idle iowait irq softirq steal
    path.write_text(f"cpu  {busy_jiffies} 0 0 {idle_jiffies} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")


def powercap(root: Path, uj: dict[str, int], max_uj: int = 262_143_328_850) -> Path:
    for name, value in uj.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(f"{value}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return root


def test_package_zones_only_and_a_wrapped_counter(tmp_path: Path) -> None:
    root = powercap(tmp_path / "powercap", {"intel-rapl:0": 5, "intel-rapl:0:0": 3, "intel-rapl:1": 7})
    (root / "intel-rapl:1" / "energy_uj").write_text("not a number\n")  # unreadable zones are left out
    assert [z.path.parent.name for z in rapl_zones(root)] == ["intel-rapl:0"]
    assert counter_delta(100, 250, 1000) == 150 and counter_delta(900, 50, 1000) == 150
    assert rapl_zones(tmp_path / "absent") == []


def test_rapl_reading_is_attributed_by_the_process_share_of_busy_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = powercap(tmp_path / "powercap", {"intel-rapl:0": 1_000_000})
    stat = tmp_path / "stat"
    write_stat(stat, 10 * TICK, 100)
    meter = LocalEnergyMeter(powercap=root, stat=stat)
    assert meter.method == "measured-rapl"
    times = iter([2.0, 3.0])  # the process used 1 CPU second
    monkeypatch.setattr("hybridgate.serving.energy.time.process_time", lambda: next(times))
    start = meter.start()
    (root / "intel-rapl:0" / "energy_uj").write_text("21000000\n")  # the package used 20 J
    write_stat(stat, 14 * TICK, 100)  # the machine was busy 4 CPU seconds
    e = meter.stop(start)
    assert e.method == "measured-rapl" and e.joules == pytest.approx(5.0)  # a quarter of 20 J


def test_without_counters_the_cpu_time_is_priced_in_watts_per_core(tmp_path: Path) -> None:
    meter = LocalEnergyMeter(watts_per_core=10.0, powercap=tmp_path / "none")
    start = meter.start()
    sum(i * i for i in range(300_000))  # spend some CPU
    e = meter.stop(start)
    assert e.method == "estimated-cpu" and e.joules > 0 and e.as_dict()["method"] == "estimated-cpu"


def test_machine_busy_time_and_cloud_estimates(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, 3 * TICK, 5 * TICK)
    assert busy_cpu_seconds(stat) == pytest.approx(3.0)
    stat.write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        busy_cpu_seconds(stat)
    e = cloud_energy(1000, 200, joules_per_output_token=2.0, joules_per_input_token=0.1)
    assert e.joules == pytest.approx(500.0) and e.method == "estimated"


def test_every_answer_carries_its_energy_and_metrics_sum_it(make_gateway, stub) -> None:
    import httpx

    from tests.conftest import post_chat

    srv = make_gateway(energy={"cloud_joules_per_output_token": 2.0, "cloud_joules_per_input_token": 0.5})
    msg = [{"role": "user", "content": "Say hi."}]
    local = post_chat(srv.url, {"model": "hybridgate/local", "messages": msg, "max_tokens": 4}).json()
    e = local["hybridgate"]["energy"]
    assert set(e) == {"local"} and e["local"]["method"] in ("measured-rapl", "estimated-cpu") and e["local"]["joules"] > 0
    cloud = post_chat(srv.url, {"model": "hybridgate/cloud", "messages": msg, "max_tokens": 4}).json()
    u = cloud["usage"]
    assert cloud["hybridgate"]["energy"] == {"cloud": {"joules": round(u["completion_tokens"] * 2.0 + u["prompt_tokens"] * 0.5, 4), "method": "estimated"}}
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json={"model": "hybridgate/local", "messages": msg, "max_tokens": 4, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert '"energy":{"local"' in events[-1], "the last event of a stream reports it too"
    text = httpx.get(f"{srv.url}/metrics").text
    assert 'hybridgate_energy_joules_total{method="estimated",route="cloud",side="cloud"}' in text
    assert any(line.startswith("hybridgate_energy_joules_total{") and 'side="local"' in line for line in text.splitlines())
