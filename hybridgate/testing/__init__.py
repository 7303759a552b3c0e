"""What the tests and the benchmarks share, kept out of the serving package: the scriptable stand-in for the paid
cloud (``stub_upstream``), a server on a thread with a gateway in front of that stand-in (``server``), the
schema fuzzer's settings (``fuzzing``) and the PII corpus's scorer (``pii_scoring``).

Nothing in the gateway imports this package; ``serving/standin.py`` (the embedded default cloud, a second
local model) is a production feature and stays in ``serving``."""
