"""Deprecated: the SDK moved to :mod:`hybridgate.client` (``from hybridgate import Client``).

Kept so that ``from hybridgate.serving.sdk import Client`` (and ``from hybridgate.serving import sdk``) still
work; importing it warns once. It will go in a later release."""

from __future__ import annotations

import warnings

from hybridgate.client import *  # noqa: F403
from hybridgate.client import __all__  # noqa: F401

warnings.warn(
    "hybridgate.serving.sdk is deprecated: import from hybridgate.client (or hybridgate) instead",
    DeprecationWarning,
    stacklevel=2,
)
