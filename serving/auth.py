"""Optional bearer keys. With none configured the gateway is open, and `serve` keeps it on loopback."""

from __future__ import annotations

import hmac

from fastapi import Request

from hybridgate.serving.errors import ApiError


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _matches(token: str, keys: list[bytes]) -> bool:
    given = token.encode("utf-8", "surrogatepass")
    return any(hmac.compare_digest(given, k) for k in keys)  # every key compared: no timing tells which


class KeyCheck:
    """Tenants' keys (``server.api_keys``) and operators' keys (``server.admin_keys``); an admin key is also a tenant key."""

    def __init__(self, keys: list[str], admin_keys: list[str] | None = None) -> None:
        self._admin = [k.encode("utf-8") for k in admin_keys or []]
        self._keys = [k.encode("utf-8") for k in keys] + self._admin

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def is_admin(self, token: str | None) -> bool:
        return bool(token) and bool(self._admin) and _matches(token or "", self._admin)

    # The dependencies are coroutines because FastAPI runs a plain function dependency in its thread pool: two
    # thread hops per request for a dictionary lookup (measured: the largest item of the request path's profile).
    async def __call__(self, request: Request) -> str | None:
        return self.tenant(request)

    async def operator(self, request: Request) -> str | None:
        """For what only the gateway's operator may see (health details, metrics, every tenant's decisions, the
        schema): an admin key when admin keys are set, else any valid key; open when no keys are configured."""
        return self.operator_key(request)

    def tenant(self, request: Request) -> str | None:
        """The request's valid key (None on an open gateway); raises the 401 otherwise."""
        token = _bearer(request)
        if not self._keys:
            # An open gateway has one tenant: a made-up bearer token must not buy a fresh budget, cache or log.
            return None
        if not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", type="authentication_error", code="missing_api_key")
        if not _matches(token, self._keys):
            raise ApiError(401, "invalid API key", type="authentication_error", code="invalid_api_key")
        return token

    def operator_key(self, request: Request) -> str | None:
        token = self.tenant(request)
        if self._admin and not self.is_admin(token):
            raise ApiError(403, "this endpoint needs an admin key (server.admin_keys)", type="permission_error", code="admin_only")
        return token
