"""``hybridgate top``: the dashboard's overview and newest decisions in a terminal, for a device reached over ssh.

It reads the same JSON the browser pages read (/ui/api/overview and /ui/api/decisions), with the same access
rule: an admin key (``--key`` or HYBRIDGATE_ADMIN_KEY) where admin keys are set, loopback otherwise."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hybridgate.cli_common import fail


def _get(client: Any, path: str) -> dict[str, Any]:
    import httpx

    try:
        r = client.get(path)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {client.base_url}: {exc}")
    if r.status_code != 200:
        try:
            msg = r.json()["error"]["message"]
        except Exception:  # noqa: BLE001 - not the gateway's error shape: say what came back
            msg = r.text[:200]
        fail(f"{path}: HTTP {r.status_code}: {msg}")
    return r.json()  # type: ignore[no-any-return]


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "—"
    return format(v, spec) if spec else str(v)


def overview_table(o: dict[str, Any]) -> Table:
    r, share, money, energy = o["requests"], o["cloud_share"], o["money"], o["energy"]
    t = Table(title=f"last {o['window']} ({o['history']} history)", show_header=True, expand=False)
    for col in ("answered", "local", "cloud", "collab", "refused", "errors", "cloud share", "target", "spent $", "saved $", "energy J", "saved J"):
        t.add_column(col, justify="right")
    t.add_row(
        str(r["answered"]), str(r["by_route"].get("local", 0)), str(r["by_route"].get("cloud", 0)), str(r["by_route"].get("collab", 0)),
        str(r["refused"]), str(r["errors"]),
        "—" if share["actual"] is None else f"{100 * share['actual']:.1f} %", "—" if share["target"] is None else f"{100 * share['target']:.1f} %",
        f"{money['spent_usd']:.6f}", f"{money['saved_usd']:.6f}", f"{energy['used_j']:.1f}", f"{energy['saved_j']:.1f}",
    )
    return t


def latency_table(o: dict[str, Any]) -> Table:
    t = Table("route", "p50 ms", "p95 ms", "first token p50", "first token p95", title="latency")
    for route, lat in o["latency"].items():
        t.add_row(Text(route), _fmt(lat["p50_ms"]), _fmt(lat["p95_ms"]), _fmt(lat["ttft_p50_ms"]), _fmt(lat["ttft_p95_ms"]))
    if o["rejections"]:
        t.caption = "refused: " + ", ".join(f"{k} {v}" for k, v in o["rejections"].items())
    return t


def decisions_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("time", "tenant", "route", "mode", "backend", "score", "tokens", "ms", "J", "$", "rating", "status", title="newest decisions")
    for d in rows:
        t.add_row(
            datetime.fromtimestamp(d["ts"] or 0).strftime("%H:%M:%S"),
            Text(_fmt(d["tenant"])), Text(_fmt(d["route"])), Text(_fmt(d["mode"])), Text(_fmt(d["backend"])),
            _fmt(d["score"], ".3f"), str(d["tokens"]), _fmt(d["latency_ms"]), _fmt(d["energy_j"]), _fmt(d["cost_usd"]), _fmt(d.get("feedback")),
            Text(_fmt(d["status"])),
        )
    return t


def render(client: Any, window: str, rows: int) -> Group:
    o = _get(client, f"/ui/api/overview?window={window}")
    d = _get(client, f"/ui/api/decisions?limit={rows}")
    return Group(overview_table(o), latency_table(o), decisions_table(d["data"]))


def top(
    url: str = typer.Option("http://127.0.0.1:8080", help="The gateway's address."),
    key: str | None = typer.Option(None, "--key", envvar="HYBRIDGATE_ADMIN_KEY", help="An admin key (where admin keys are set)."),
    window: str = typer.Option("hour", help="hour or day"),
    rows: int = typer.Option(15, min=1, max=200, help="How many of the newest decisions to show."),
    interval: float = typer.Option(2.0, min=0.2, help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (scripts, tests, no terminal)."),
) -> None:
    """Watch the gateway: where requests went, what they cost and saved, and the newest decisions."""
    import httpx

    if window not in ("hour", "day"):
        fail(f"--window must be hour or day, not {window!r}")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10) as client:
        console = Console()
        if once:
            console.print(render(client, window, rows))
            return
        from rich.live import Live

        with Live(render(client, window, rows), console=console, refresh_per_second=4, screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(render(client, window, rows))
            except KeyboardInterrupt:
                pass

