"""The dashboard's HTTP surface: four pages, the sign-in form, their static files, and the JSON they read."""

from __future__ import annotations

import urllib.parse
from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from hybridgate.serving.auth import KeyCheck
from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.errors import ApiError
from hybridgate.serving.gateway import Gateway
from hybridgate.serving.schemas import ErrorResponse
from hybridgate.serving.ui import views
from hybridgate.serving.ui.access import COOKIE, SESSION_S, UiAccess
from hybridgate.serving.ui.history import HistorySampler

# No inline script or style anywhere: the pages load one script and one stylesheet from /ui/static.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SAFE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PAGES = {"overview": "Overview", "decisions": "Decisions", "router": "Router", "nodes": "Nodes and fleet"}
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
MAX_FORM_BYTES = 4096
MAX_FEEDBACK_IDS = 200


def _asset(name: str) -> str:
    return resources.files("hybridgate.serving.ui").joinpath("static", name).read_text(encoding="utf-8")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {
        401: "admin keys are set and no admin key (bearer header or session cookie) came with the request",
        403: "no admin keys are set and the caller is not this device (loopback, not through a proxy)",
        404: "no decision with this id in the decision log",
        422: "a parameter is out of range",
    }
    return {code: {"model": ErrorResponse, "description": what[code]} for code in statuses}


class Dashboard:
    """The pages and their history sampler; the sampler starts with the gateway and stops with it."""

    def __init__(self, cfg: GatewayConfig, keys: KeyCheck, sample_s: float = 1.0) -> None:
        self.cfg = cfg
        self.access = UiAccess(keys, bool(cfg.server.admin_keys))
        self.sample_s = sample_s
        self.sampler: HistorySampler | None = None
        self._template = _asset("page.html")
        self._login = _asset("login.html")

    def start(self, gateway: Gateway) -> None:
        policy = gateway.policy
        self.sampler = HistorySampler(
            gateway.metrics, self.cfg.state.redis_url, self.sample_s, thresholds=lambda: ((s := policy.snapshot).threshold, s.t_local),  # one snapshot: a consistent pair
            decisions=gateway.state.recent_decisions,
        )
        self.sampler.start()

    async def aclose(self) -> None:
        if self.sampler is not None:
            await self.sampler.aclose()

    def page(self, name: str) -> str:
        current = ' aria-current="page"'
        nav = "".join(
            f'<a href="/ui{"" if key == "overview" else "/" + key}"{current if key == name else ""}>{title}</a>'
            for key, title in PAGES.items()
        )
        return self._template.replace("{{PAGE}}", name).replace("{{TITLE}}", PAGES[name]).replace("{{NAV}}", nav)

    def mount(self, app: FastAPI) -> None:
        access = self.access
        api = APIRouter(prefix="/ui/api", tags=["dashboard"], dependencies=[Depends(access.require)], responses=_errors(401, 403))

        def gw(request: Request) -> Gateway:
            return request.app.state.gateway  # type: ignore[no-any-return]

        def sampler() -> HistorySampler:
            if self.sampler is None:
                raise ApiError(503, "the dashboard's history starts with the gateway", type="server_busy", code="starting")
            return self.sampler

        @api.get("/overview", responses=_errors(422))
        async def overview(
            window: Literal["hour", "day"] = Query("hour", description="last hour (10 s buckets) or last day (5 min buckets)"),
            gateway: Gateway = Depends(gw),
            history: HistorySampler = Depends(sampler),
        ) -> JSONResponse:
            """Requests by route over time, the cloud share against its target, money and energy spent and saved
            against an all-cloud baseline, latency and first-token percentiles by route, rejections, errors and
            fallbacks: from the counters, sampled in the background."""
            return JSONResponse(await views.overview(gateway, history, window), headers=SAFE_HEADERS)

        @api.get("/decisions", responses=_errors(422))
        async def decisions(
            limit: int = Query(50, ge=1, le=1000),
            route: Literal["local", "cloud", "collab"] | None = Query(None),
            tenant: str | None = Query(None, max_length=64, description="a tenant's pseudonym (the key's digest)"),
            since: float | None = Query(None, description="only decisions logged after this Unix time"),
            gateway: Gateway = Depends(gw),
        ) -> JSONResponse:
            """The newest decisions, newest first, one row each: never the prompt or the answer."""
            return JSONResponse(await views.decisions(gateway, limit, route, tenant, since), headers=SAFE_HEADERS)

        @api.get("/decisions/{request_id}", responses=_errors(404))
        async def decision(request_id: str, gateway: Gateway = Depends(gw)) -> JSONResponse:
            """One decision's whole explanation: reasons, signals, thresholds, node estimates, fallback, energy."""
            found = await views.find_decision(gateway, request_id[:128])
            if found is None:
                raise ApiError(404, "no decision with this id in the decision log", type="not_found_error", code="decision_not_found")
            return JSONResponse(found, headers=SAFE_HEADERS)

        @api.get("/feedback", responses=_errors(422))
        async def feedback(
            ids: list[str] = Query([], alias="id", description="request ids whose rating to read, repeated (at most 200)"),
            gateway: Gateway = Depends(gw),
        ) -> JSONResponse:
            """The users' ratings (0 bad .. 1 good, null: none yet) of answers already on the page: a live table
            reads only newer decisions, and a rating arrives after its decision."""
            if len(ids) > MAX_FEEDBACK_IDS:
                raise ApiError(422, f"at most {MAX_FEEDBACK_IDS} ids", code="invalid_schema", param="id")
            return JSONResponse(await views.feedback_of(gateway, list(dict.fromkeys(i[:128] for i in ids))), headers=SAFE_HEADERS)

        @api.get("/router")
        async def router(gateway: Gateway = Depends(gw), history: HistorySampler = Depends(sampler)) -> JSONResponse:
            """The active router, its quality report, thresholds and their history, labels, the local correction."""
            return JSONResponse(await views.router_view(gateway, history), headers=SAFE_HEADERS)

        @api.get("/nodes")
        async def nodes(gateway: Gateway = Depends(gw)) -> JSONResponse:
            """Each backend's health, load and speed, the learnt node weights, and what the fleet published."""
            return JSONResponse(views.nodes_view(gateway), headers=SAFE_HEADERS)

        app.include_router(api)

        def html(body: str, status: int = 200) -> Response:
            return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=SAFE_HEADERS)

        def page_route(name: str) -> Any:
            async def show(request: Request) -> Response:
                if access.allowed(request):
                    return html(self.page(name))
                if not access.admin_configured:
                    return html(self._login.replace("{{MESSAGE}}", "This gateway has no admin keys: the dashboard is served to this device only."), 403)
                return RedirectResponse("/ui/login", status_code=303, headers=SAFE_HEADERS)

            return show

        for name in PAGES:
            app.add_api_route("/ui" if name == "overview" else f"/ui/{name}", page_route(name), methods=["GET"], include_in_schema=False)

        @app.get("/ui/login", include_in_schema=False)
        async def login_form() -> Response:
            return html(self._login.replace("{{MESSAGE}}", ""))

        @app.post("/ui/login", include_in_schema=False)
        async def login(request: Request) -> Response:
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                return html(self._login.replace("{{MESSAGE}}", "The form is too large."), 413)
            key = (urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("key") or [""])[0].strip()
            token = access.sign_in(key)
            if token is None:
                return html(self._login.replace("{{MESSAGE}}", "That is not an admin key."), 401)
            resp = RedirectResponse("/ui", status_code=303, headers=SAFE_HEADERS)
            resp.set_cookie(
                COOKIE, token, max_age=SESSION_S, path="/ui", httponly=True, samesite="strict", secure=request.url.scheme == "https"
            )
            return resp

        @app.post("/ui/logout", include_in_schema=False)
        async def logout(request: Request) -> Response:
            access.sign_out(request.cookies.get(COOKIE))
            resp = RedirectResponse("/ui/login", status_code=303, headers=SAFE_HEADERS)
            resp.delete_cookie(COOKIE, path="/ui")
            return resp

        @app.get("/ui/static/{name}", include_in_schema=False)
        async def static(name: str) -> Response:
            if name not in STATIC:
                raise ApiError(404, "no such file", type="not_found_error", code="not_found")
            return Response(_asset(name), media_type=STATIC[name], headers={**SAFE_HEADERS, "Cache-Control": "max-age=300"})
