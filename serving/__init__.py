"""The HTTP gateway: backends, state, metrics and the OpenAI-compatible API."""
