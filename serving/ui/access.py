"""Who may see the dashboard: an admin key (bearer header, or a session cookie from the sign-in form) where
admin keys are configured; where none are, a direct loopback caller only. A tenant's key never opens it."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict

from fastapi import Request

from hybridgate.serving.auth import KeyCheck
from hybridgate.serving.errors import ApiError

COOKIE = "hybridgate_ui"
SESSION_S = 12 * 3600
_MAX_SESSIONS = 1000
_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


def _loopback(request: Request) -> bool:
    from hybridgate.serving.app import is_loopback

    host = request.client.host if request.client else ""
    return is_loopback(host) and not any(h in request.headers for h in _FORWARDED)


class UiAccess:
    """Sessions are random tokens kept in this process (a restart signs operators out); the cookie holds the
    token only, never the key."""

    def __init__(self, keys: KeyCheck, admin_configured: bool) -> None:
        self.keys = keys
        self.admin_configured = admin_configured
        self._sessions: OrderedDict[str, float] = OrderedDict()

    def sign_in(self, key: str) -> str | None:
        """A new session's token for an admin key; None for anything else (a tenant key included)."""
        if not self.admin_configured or not self.keys.is_admin(key):
            return None
        token = secrets.token_urlsafe(32)
        self._sessions[token] = time.time() + SESSION_S
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return token

    def sign_out(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def _session_valid(self, token: str | None) -> bool:
        if not token:
            return False
        for known, expires in list(self._sessions.items()):
            if hmac.compare_digest(known.encode(), token.encode("utf-8", "surrogatepass")):
                if expires > time.time():
                    return True
                self._sessions.pop(known, None)
        return False

    def allowed(self, request: Request) -> bool:
        if not self.admin_configured:
            return _loopback(request)
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
        return self.keys.is_admin(bearer) or self._session_valid(request.cookies.get(COOKIE))

    def require(self, request: Request) -> None:
        """For the JSON endpoints: 401 without credentials, 403 for a caller the rule never lets in."""
        if self.allowed(request):
            return
        if not self.admin_configured:
            raise ApiError(
                403, "the dashboard is served to this device only (loopback, not through a proxy) when no admin keys are set",
                type="permission_error", code="loopback_only",
            )
        raise ApiError(401, "the dashboard needs an admin key: sign in at /ui/login or send 'Authorization: Bearer <admin key>'",
                       type="authentication_error", code="admin_only")
