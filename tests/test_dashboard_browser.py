"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against one running gateway
with the stand-in cloud for the whole module. Screenshots of each page go to a temporary folder (and, with
HYBRIDGATE_SCREENSHOTS=docs/img, over the committed ones: refreshed on purpose, not by every run)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridgate.classifiers.embedder import Embedder
from hybridgate.serving.app import create_app
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.build import build_gateway
from hybridgate.serving.state.base import key_id
from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app
from tests.conftest import ServerThread, gateway_config, need_program, post_chat

ADMIN, TENANT = "admin-key-browser", "tenant-key-browser"
HOSTILE_MODEL = "<script>window.__pwned=1</script>big"
HOSTILE_USER = "<script>window.__pwned=2</script>"
HOSTILE_REASON = "<img src=x onerror=\"window.__pwned=3\"><script>window.__pwned=4</script>"
LOCAL, CLOUD = 3, 2
pytestmark = pytest.mark.slow


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    return path or need_program("chromium", "apt-get update && apt-get install -y chromium")


@pytest.fixture(scope="module")
def site(local_model: LlamaBackend, query_embedder: Embedder) -> Iterator[dict[str, Any]]:
    """One gateway for the module, after a known mix: LOCAL answers from the device, CLOUD from the stand-in
    cloud, one refused (privacy forbids the cloud it was pinned to)."""
    exe = chromium()
    behaviour = StubBehaviour()
    with ServerThread(create_stub_app(behaviour)) as stub:
        cfg = gateway_config(
            stub.url,
            cloud={"model": f"openai/{HOSTILE_MODEL}", "cost_per_1k_prompt_usd": 0.5, "cost_per_1k_completion_usd": 1.5},
            server={"api_keys": [TENANT], "admin_keys": [ADMIN]},
        )
        gateway = build_gateway(cfg, local=local_model, embedder=query_embedder)
        with ServerThread(create_app(cfg, lambda: gateway)) as srv:
            h = {"authorization": f"Bearer {TENANT}"}
            msg = [{"role": "user", "content": "Say hi."}]
            for _ in range(LOCAL):
                assert post_chat(srv.url, {"model": "hybridgate/local", "messages": msg, "max_tokens": 2}, headers=h).status_code == 200
            cloud_ids = []
            for _ in range(CLOUD):
                body = {"model": "hybridgate/cloud", "messages": msg, "user": HOSTILE_USER}
                r = post_chat(srv.url, body, headers=h)
                assert r.status_code == 200
                cloud_ids.append(r.json()["id"])
            refused = post_chat(srv.url, {"model": "hybridgate/cloud", "messages": msg}, headers={**h, "x-hybridgate-privacy": "strict"})
            assert refused.status_code == 403
            yield {"url": srv.url, "exe": exe, "gateway": gateway, "cloud_ids": cloud_ids}


@pytest.fixture(scope="module")
def browser(site: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=site["exe"], args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def signed_in(browser: Any, url: str) -> Any:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(url + "/ui")
    assert page.url.endswith("/ui/login")
    page.fill("#key", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/ui")
    return page


def shoot(page: Any, shots: Path, name: str) -> None:
    path = shots / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("HYBRIDGATE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).text_content())


def test_overview_shows_the_mix_and_a_new_request_within_two_seconds(site: dict[str, Any], browser: Any, shots: Path) -> None:
    page = signed_in(browser, site["url"])
    page.wait_for_selector("#answered")
    assert (text(page, "#answered"), text(page, "#route-local"), text(page, "#route-cloud")) == (str(LOCAL + CLOUD), str(LOCAL), str(CLOUD))
    assert (text(page, "#route-collab"), text(page, "#refused"), text(page, "#errors")) == ("0", "1", "0")
    assert text(page, "#cloud-share") == f"{100 * CLOUD / (LOCAL + CLOUD):.1f} %"
    assert "privacy_strict" in text(page, "main")  # the refusal, by its reason
    assert page.locator("#requests-chart rect").count() >= 2  # local and cloud bars
    shoot(page, shots, "overview")
    r = post_chat(site["url"], {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "one more"}]},
                  headers={"authorization": f"Bearer {TENANT}"})
    assert r.status_code == 200
    # polled every second: the new answer is on the page within 2 s of being answered (Playwright's own waits:
    # wait_for_function would evaluate a string, which the page's CSP rightly forbids)
    expect(page.locator("#route-cloud")).to_have_text(str(CLOUD + 1), timeout=2000)
    expect(page.locator("#answered")).to_have_text(str(LOCAL + CLOUD + 1), timeout=100)
    page.context.close()


def test_decisions_table_filters_explains_and_shows_hostile_values_as_text(site: dict[str, Any], browser: Any, shots: Path) -> None:
    gw = site["gateway"]
    import asyncio

    # A reason is text from elsewhere (an upstream's error message): log one that carries markup.
    record = {"id": "chatcmpl-hostile", "ts": time.time(), "key": "tenant-x", "status": "ok", "route": "cloud", "backend": "cloud",
              "user": HOSTILE_USER, "prompt_tokens": 1, "completion_tokens": 1, "latency_ms": 1.0, "cost_usd": 0.0,
              "decided": {"route": "cloud", "reasons": [HOSTILE_REASON], "signals": [{"name": HOSTILE_REASON, "push": 0.1}]},
              "fallback": {"from": "local", "reason": HOSTILE_REASON}}
    # Playwright's sync API holds an event loop on this thread: log from a thread of its own.
    worker = threading.Thread(target=lambda: asyncio.run(gw.state.log_decision(record)))
    worker.start()
    worker.join()
    page = signed_in(browser, site["url"])
    page.goto(site["url"] + "/ui/decisions")
    page.wait_for_selector("#decisions tbody tr")
    assert HOSTILE_USER in text(page, "#decisions") and HOSTILE_REASON in text(page, "#decisions")
    # a rating given while its row is on the page reaches the row's Feedback cell with the next updates (a pinned
    # model is not scored, so nothing was held for a rating: hold the cloud answer as a routed one would be)
    rated = site["cloud_ids"][0]
    held = {"key": key_id(TENANT), "route": "cloud"}
    worker = threading.Thread(target=lambda: asyncio.run(gw.state.hold(rated, held, 600)))
    worker.start()
    worker.join()
    column = page.locator("#decisions th").all_text_contents().index("feedback") + 1
    cell = page.locator(f"tr[data-id='{rated}'] td:nth-child({column})")
    expect(cell).to_have_text("—", timeout=100)
    fb = httpx.post(site["url"] + "/v1/feedback", json={"id": rated, "rating": 0.75}, headers={"authorization": f"Bearer {TENANT}"})
    assert fb.status_code == 200
    expect(cell).to_have_text("0.75", timeout=2000)
    page.select_option("#route-filter", "local")
    expect(page.locator("#decisions tbody tr")).to_have_count(LOCAL)
    page.select_option("#route-filter", "")
    page.locator("tr[data-id='chatcmpl-hostile']").click()
    page.wait_for_selector("#explanation-json")
    assert HOSTILE_REASON in text(page, "#explanation")
    shoot(page, shots, "decisions")
    page.goto(site["url"] + "/ui/nodes")
    page.wait_for_selector("#nodes tbody tr")
    assert HOSTILE_MODEL in text(page, "#nodes")
    shoot(page, shots, "nodes")
    # every hostile value was shown as text: nothing ran, no element came from a value
    assert page.evaluate("window.__pwned === undefined")
    assert page.evaluate("document.querySelectorAll('main script, main img').length") == 0
    page.goto(site["url"] + "/ui/decisions")
    page.wait_for_selector("#decisions tbody tr")
    assert page.evaluate("window.__pwned === undefined && document.querySelectorAll('main script, main img').length === 0")
    page.goto(site["url"] + "/ui/router")
    page.wait_for_selector("#pgr-chart svg")
    shoot(page, shots, "router")
    page.context.close()


def test_without_an_admin_key_the_browser_gets_no_page_and_no_data(site: dict[str, Any], browser: Any) -> None:
    for headers in ({}, {"authorization": f"Bearer {TENANT}"}):
        ctx = browser.new_context(extra_http_headers=headers)
        page = ctx.new_page()
        page.goto(site["url"] + "/ui/decisions")
        assert page.url.endswith("/ui/login") and page.locator("#decisions").count() == 0
        status = page.evaluate("fetch('/ui/api/overview').then(r => r.status)")
        assert status == 401
        ctx.close()
    # and what the login page answers to a tenant key
    assert httpx.post(site["url"] + "/ui/login", data={"key": TENANT}, follow_redirects=False).status_code == 401
