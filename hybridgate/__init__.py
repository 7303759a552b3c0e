"""hybridgate: an on-device gateway that answers each chat request locally, in the cloud, or both."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hybridgate")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

from hybridgate.serving.sdk import (  # noqa: E402
    AsyncClient,
    ChatResult,
    Client,
    HybridgateError,
    RouteDecision,
    RoutingInfo,
)

__all__ = ["AsyncClient", "ChatResult", "Client", "HybridgateError", "RouteDecision", "RoutingInfo", "__version__"]
