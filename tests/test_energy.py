"""Energy meters on recorded counter files (no machine here exposes RAPL) and on the estimated path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hybridgate.router import (
    EnergyBudgetExhausted,
    EnergyCapExceeded,
    Mode,
    Route,
    RouteContext,
    RouteQuery,
    RoutingPolicy,
    RuleScorer,
)
from hybridgate.serving.energy import (
    EnergyRate,
    LocalEnergyMeter,
    NvmlMeter,
    Reading,
    busy_cpu_seconds,
    cloud_energy,
    counter_delta,
    rapl_zones,
)

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


class RecordedNvml:
    """NVML's four calls, answering from recorded readings (no GPU here)."""

    def __init__(self, millijoules: list[int], pids: list[int] | None) -> None:
        self.readings, self.pids = iter(millijoules), pids

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        return next(self.readings)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[object]:
        if self.pids is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return [type("Proc", (), {"pid": p})() for p in self.pids]


def test_nvml_adds_the_gpu_energy_by_the_process_share(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, 10 * TICK, 10 * TICK)
    # 1,000 J of CPU (estimated from CPU time) can't be recorded here; the GPU part can: 90 J over the answer.
    gpu = NvmlMeter(RecordedNvml([5_000, 5_000, 95_000], pids=[os.getpid(), 4242]))  # the first read probes the counter
    meter = LocalEnergyMeter(10.0, powercap=tmp_path / "none", stat=stat, gpu=gpu)
    assert meter.method == "estimated-cpu+measured-nvml"
    e = meter.stop(meter.start())
    assert e.method == "estimated-cpu+measured-nvml"
    assert e.joules == pytest.approx(45.0, abs=1.0)  # half of 90 J (two processes compute there) + a sliver of CPU time
    alone = NvmlMeter(RecordedNvml([0, 2_000], pids=[os.getpid()]))
    assert LocalEnergyMeter(1e-9, powercap=tmp_path / "none", stat=stat, gpu=alone).stop(Reading(0.0, None, (), 0)).joules == pytest.approx(2.0)
    elsewhere = NvmlMeter(RecordedNvml([0], pids=[4242]))
    assert elsewhere.share() == 0.0, "a GPU this process does not compute on is not its energy"
    assert NvmlMeter(RecordedNvml([0], pids=None)).share() == 1.0
    assert NvmlMeter.open(99) is None, "no GPU 99 anywhere: no meter, and no error"


def test_the_local_rate_is_learnt_from_measured_answers() -> None:
    rate = EnergyRate(joules_per_output_token=0.5, joules_per_input_token=0.05)
    assert rate.expected(100, 100) == pytest.approx(0.5 * (100 + 0.1 * 100))
    rate.observe(22.0, prompt_tokens=200, completion_tokens=100)  # 22 J for 100 + 20 token-equivalents
    assert rate.expected(200, 100) == pytest.approx(22.0)
    rate.observe(float("nan"), 10, 10)
    rate.observe(5.0, 0, 0)
    assert rate.measured == 1 and rate.expected(200, 100) == pytest.approx(22.0), "nothing to learn from these"


BACKENDS = {"local": Route.LOCAL, "cloud": Route.CLOUD}


def energy_ctx(**kw: object) -> RouteContext:
    return RouteContext(BACKENDS, frozenset(BACKENDS), **kw)  # type: ignore[arg-type]


def test_energy_rule_refuses_a_spent_day_and_moves_or_refuses_over_the_cap() -> None:
    policy = RoutingPolicy(RuleScorer(long_prompt_tokens=300), threshold=0.5)
    hard = RouteQuery("Prove that the integral converges, step by step", 400, 1)
    easy = RouteQuery("hi", 5, 1)
    for query in (hard, easy, RouteQuery("x", 5, 1, requested_model="cloud"), RouteQuery("x", 5, 1, requested_model="hybridgate/local")):
        with pytest.raises(EnergyBudgetExhausted, match="daily energy budget"):
            policy.decide(query, energy_ctx(energy_budget_exhausted=True))
    joules = {Route.LOCAL: 30.0, Route.CLOUD: 500.0}
    d = policy.decide(hard, energy_ctx(energy_cap_j=100.0, expected_joules=joules))
    assert d.route is Route.LOCAL and any(r.startswith("energy cap 100 J: local expects 30 J, cloud 500 J") for r in d.reasons)
    assert policy.decide(hard, energy_ctx(energy_cap_j=1000.0, expected_joules=joules)).route is Route.CLOUD
    flipped = {Route.LOCAL: 300.0, Route.CLOUD: 50.0}
    assert policy.decide(easy, energy_ctx(energy_cap_j=100.0, expected_joules=flipped)).route is Route.CLOUD
    strict = RouteQuery("hi", 5, 1, privacy_strict=True)
    with pytest.raises(EnergyCapExceeded, match="no other route it may take"):
        policy.decide(strict, energy_ctx(energy_cap_j=100.0, expected_joules=flipped))  # the cloud is not an option
    with pytest.raises(EnergyCapExceeded, match="backend cloud is expected to use 500 J"):
        policy.decide(RouteQuery("x", 5, 1, requested_model="cloud"), energy_ctx(energy_cap_j=100.0, expected_joules=joules))
    cascade = RoutingPolicy(RuleScorer(long_prompt_tokens=300), threshold=1.01, t_local=0.0, mode=Mode.CASCADE)
    d = cascade.decide(hard, energy_ctx(energy_cap_j=100.0, expected_joules={Route.LOCAL: 60.0, Route.CLOUD: 60.0}))
    assert d.route is Route.LOCAL, "a cascade costs both sides (120 J): over the cap, local alone fits"


def test_energy_budget_and_cap_over_http(make_gateway) -> None:
    from tests.conftest import post_chat

    msg = [{"role": "user", "content": "Say hi."}]
    srv = make_gateway(
        server={"api_keys": ["k1", "k2"]},
        budgets={"per_key_daily_joules": {"k1": 0.001}, "per_key_max_joules_per_request": {"k2": 50.0}},
        energy={"cloud_joules_per_output_token": 2.0, "cloud_joules_per_input_token": 0.0},
    )
    # 0.001 J cannot hold the worst case of any answer: refused before it runs, on a pinned and an automatic route.
    for model in ("hybridgate/local", "hybridgate/auto"):
        spent = post_chat(srv.url, {"model": model, "messages": msg, "max_tokens": 4}, headers={"Authorization": "Bearer k1"})
        assert spent.status_code == 429 and spent.json()["error"]["code"] == "energy_budget_exhausted", spent.text
    assert post_chat(srv.url, {"model": "hybridgate/local", "messages": msg, "max_tokens": 4}, headers={"Authorization": "Bearer k2"}).status_code == 200
    # 100 answer tokens in the cloud are 200 J, over k2's cap of 50 J per request: a pinned request is refused...
    over = post_chat(srv.url, {"model": "hybridgate/cloud", "messages": msg, "max_tokens": 100}, headers={"Authorization": "Bearer k2"})
    assert over.status_code == 400 and over.json()["error"]["code"] == "energy_cap_exceeded"
    assert "max_tokens" in over.json()["error"]["message"]
    # ...and an automatic one that scored cloud is answered within the cap, locally, saying why.
    route = httpx_route(srv.url, {"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Prove, step by step, " * 40}], "max_tokens": 100}, "k2")
    assert route["route"] == "local" and any(r.startswith("energy cap 50 J") for r in route["reasons"]), route


def httpx_route(url: str, body: dict[str, object], key: str) -> dict[str, object]:
    import httpx

    r = httpx.post(f"{url}/v1/route", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_concurrent_requests_with_several_choices_cannot_together_overspend_the_energy_budget(
    make_gateway, stub, store: str, request: pytest.FixtureRequest
) -> None:
    """Issue 23, finding 6: the daily energy budget was checked before a request, never set aside, so three
    concurrent n=4 requests each saw an unspent day and together used 240 J of 100. Each now reserves its worst
    case (n x max_tokens and the prompt) first; the invariant is the day's total, whatever the interleaving."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from hybridgate.serving.state.base import key_id, today
    from tests.conftest import post_chat
    from tests.test_errors_auth import assert_openai_error

    stub[1].delay_s, stub[1].reply_words = 0.3, 10  # every choice uses its whole max_tokens; all requests in flight at once
    state = {"redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {}
    srv = make_gateway(
        server={"api_keys": ["k"]},
        state=state,
        budgets={"per_key_daily_joules": {"k": 100.0}},
        energy={"cloud_joules_per_output_token": 2.0, "cloud_joules_per_input_token": 0.0},
    )
    body = {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 10, "n": 4}
    with ThreadPoolExecutor(3) as pool:  # 4 x 10 tokens x 2 J = 80 J each at most: room for one at a time
        results = list(pool.map(lambda _: post_chat(srv.url, body, headers={"Authorization": "Bearer k"}), range(3)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 429, 429], codes
    assert all(r.json()["error"]["code"] == "energy_budget_exhausted" for r in results if r.status_code == 429)
    used = sum(side["joules"] for r in results if r.status_code == 200 for side in r.json()["hybridgate"]["energy"].values())
    assert 0 < used <= 100.0 + 1e-9, used
    # Once accounted, what was set aside is given back: 80 J used, one streamed 20 J answer still fits (its own
    # reservation given back when its stream ends), a further one does not.
    one = {**body, "n": 1}
    auth = {"Authorization": "Bearer k"}
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json={**one, "stream": True}, headers=auth, timeout=60) as r:
        assert r.status_code == 200 and r.read().endswith(b"data: [DONE]\n\n")
    assert_openai_error(post_chat(srv.url, one, headers={"Authorization": "Bearer k"}), 429, "energy_budget_exhausted")
    if store == "redis":  # the shared counters agree, and nothing is left set aside
        import redis

        raw = redis.Redis.from_url(state["redis_url"]).hgetall(f"hybridgate:usage:{today()}:{key_id('k')}")
        h = {k.decode(): v.decode() for k, v in raw.items()}
        assert float(h["energy_joules"]) == pytest.approx(100.0) and float(h["reserved_joules"]) == 0.0, h
    else:
        assert not any(srv.gateway.state._reserved.values())  # type: ignore[attr-defined]
