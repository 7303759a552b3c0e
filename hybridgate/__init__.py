"""hybridgate: an on-device gateway that answers each chat request locally, in the cloud, or both."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hybridgate")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

# The client only (httpx): importing hybridgate loads nothing of the server (tests/test_sdk.py checks it).
from hybridgate.client import (  # noqa: E402
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BackendError,
    BadRequestError,
    ChatResult,
    Client,
    Decision,
    HybridgateError,
    NotFoundError,
    RateLimitError,
    Routing,
    ServiceUnavailableError,
)

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BackendError",
    "BadRequestError",
    "ChatResult",
    "Client",
    "Decision",
    "HybridgateError",
    "NotFoundError",
    "RateLimitError",
    "Routing",
    "ServiceUnavailableError",
    "__version__",
]


def __getattr__(name: str) -> object:
    """The SDK's old names (RouteDecision, RoutingInfo) still resolve, with a DeprecationWarning."""
    if name in ("RouteDecision", "RoutingInfo"):
        import hybridgate.client as _client

        return getattr(_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
