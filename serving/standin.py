"""A larger local model behind OpenAI's HTTP API on loopback, playing the cloud when no credentials exist.

It is a second hybridgate process serving only its local route, so the cloud
path of the main gateway (litellm, timeouts, fallback, spend) runs for real with
zero configuration. The child dies with its parent (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from hybridgate.serving.config import StandinConfig

log = logging.getLogger(__name__)

STANDIN_NAME = "hybridgate-standin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Standin:
    def __init__(self, cfg: StandinConfig) -> None:
        self.cfg = cfg
        self.port = cfg.port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._launched = 0.0
        self._dir = tempfile.TemporaryDirectory(prefix="hybridgate-standin-")

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _config_file(self) -> Path:
        path = Path(self._dir.name) / "standin.yaml"
        local = {"name": STANDIN_NAME, "n_ctx": self.cfg.n_ctx, "n_threads": self.cfg.n_threads, "max_queue": 16}
        if self.cfg.model_path:
            local["model_path"] = self.cfg.model_path
        doc = {
            "server": {"host": "127.0.0.1", "port": self.port, "log_level": "warning"},
            "local": local,
            "cloud": None,
            "standin": {"enabled": False},
        }
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    def start(self) -> str:
        self.launch()
        return self.wait_ready()

    def launch(self) -> str:
        """Start the process and return its address at once: the gateway loads its own models meanwhile."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDGATE_") and k != "REDIS_URL"}
        cmd = [sys.executable, "-m", "hybridgate.cli", "serve", "--config", str(self._config_file())]
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        # Started in its own folder: a checkout in the working directory must not shadow the installed package.
        self.proc = subprocess.Popen(cmd, env=env, cwd=self._dir.name, preexec_fn=preexec)  # noqa: PLW1509 - only sets a signal
        self._launched = time.monotonic()
        return self.api_base

    def wait_ready(self) -> str:
        assert self.proc is not None, "launch() first"
        deadline = self._launched + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the cloud stand-in exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0).status_code == 200:
                    log.info("cloud stand-in ready at %s", self.api_base)
                    return self.api_base
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the cloud stand-in was not ready after {self.cfg.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._dir.cleanup()
