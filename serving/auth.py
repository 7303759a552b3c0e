"""Optional bearer keys. With none configured the gateway is open, and `serve` keeps it on loopback."""

from __future__ import annotations

import hmac

from fastapi import Request

from hybridgate.serving.errors import ApiError


class KeyCheck:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode("utf-8") for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __call__(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not self._keys:
            return token or None
        if not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", type="authentication_error", code="missing_api_key")
        given = token.encode("utf-8")
        if not any(hmac.compare_digest(given, k) for k in self._keys):
            raise ApiError(401, "invalid API key", type="authentication_error", code="invalid_api_key")
        return token
