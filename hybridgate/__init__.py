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
    HybridgateError,
    NotFoundError,
    RateLimitError,
    RouteDecision,
    RoutingInfo,
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
    "HybridgateError",
    "NotFoundError",
    "RateLimitError",
    "RouteDecision",
    "RoutingInfo",
    "ServiceUnavailableError",
    "__version__",
]
