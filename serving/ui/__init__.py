"""The operator's dashboard at /ui: pages, their JSON, and the history sampled for them in the background."""

from hybridgate.serving.ui.routes import Dashboard

__all__ = ["Dashboard"]
