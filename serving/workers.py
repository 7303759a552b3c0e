"""``hybridgate serve --workers N``: N gateway processes on one port, one local model for the machine.

One Python process uses one core for the gateway's own work (parsing, deciding, the privacy scan, the
event loop); N workers use N. The pieces:

- **the workers** are uvicorn's: the supervisor binds the port once and each worker accepts on it;
- **shared state** is the replicas' design (docs/replicas.md): budgets, reservations, the decision log, the
  cache and held ratings live in Redis, so N workers behave as one gateway. Without Redis each worker would
  keep its own budget, so N > 1 refuses to start without one;
- **the local model** is loaded once, in its own process (serving/model_server.py), which the workers reach
  over a Unix socket (serving/backends/local_shared.py);
- **metrics** are prometheus_client's multiprocess files in the run folder (serving/metrics.py): any worker's
  ``/metrics`` gives the sum.

Every answer carries ``x-hybridgate-worker`` (the worker's process id), to see how the load spreads.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from uvicorn.supervisors.multiprocess import Multiprocess

from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

RUN_DIR_ENV = "HYBRIDGATE_WORKERS_RUN_DIR"  # where a worker finds its configuration, socket and board
WORKER_HEADER = b"x-hybridgate-worker"


def needs_redis(cfg: GatewayConfig, workers: int) -> str | None:
    """Why ``workers`` cannot run on ``cfg``, as one line; None when they can."""
    if workers > 1 and not cfg.state.redis_url:
        return (
            f"--workers {workers} needs Redis: the workers share budgets, reservations, the decision log and the cache "
            "through it (set state.redis_url or REDIS_URL, e.g. redis://127.0.0.1:6379/0), or serve with --workers 1"
        )
    return None


class ModelProcess:
    """The machine's local model in a child process that dies with the supervisor."""

    def __init__(self, run_dir: Path, startup_timeout_s: float = 120.0) -> None:
        self.run_dir = run_dir
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._launched = 0.0

    def launch(self) -> None:
        from hybridgate.serving.standin import _die_with_parent

        env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
        cmd = [sys.executable, "-m", "hybridgate.serving.model_server", str(self.run_dir)]
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.run_dir, preexec_fn=preexec)  # noqa: PLW1509 - only sets a signal
        self._launched = time.monotonic()

    def wait_ready(self) -> None:
        assert self.proc is not None, "launch() first"
        transport = httpx.HTTPTransport(uds=str(self.run_dir / "model.sock"))
        with httpx.Client(transport=transport, base_url="http://local-model", timeout=1.0) as client:
            while time.monotonic() < self._launched + self.startup_timeout_s:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the local model process exited with code {self.proc.returncode}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the local model process was not ready after {self.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_workers(cfg: GatewayConfig, workers: int, before_serving: Any = None) -> None:
    """Start the model process and ``workers`` gateways on ``cfg.server``'s address; return when they stop.

    ``before_serving`` (no arguments) runs once the model process is launched, while it loads: the caller
    waits for its own helpers (the cloud stand-in) there."""
    import uvicorn

    from hybridgate.serving.backends.local_llama import default_model_path

    run_dir = Path(tempfile.mkdtemp(prefix="hybridgate-workers-"))
    model = ModelProcess(run_dir)
    try:
        if not cfg.local.model_path:
            cfg.local.model_path = str(default_model_path())
        if not Path(cfg.local.model_path).is_file():
            raise FileNotFoundError(f"model file not found: {cfg.local.model_path}")
        (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
        model.launch()
        if before_serving is not None:
            before_serving()
        model.wait_ready()
        (run_dir / "metrics").mkdir()
        os.environ[MULTIPROC_ENV] = str(run_dir / "metrics")  # read by each worker's prometheus_client on import
        os.environ[RUN_DIR_ENV] = str(run_dir)
        log.info("local model ready; starting %d workers on %s:%d", workers, cfg.server.host, cfg.server.port)
        config = uvicorn.Config(
            "hybridgate.serving.workers:worker_app",
            factory=True,
            workers=workers,
            host=cfg.server.host,
            port=cfg.server.port,
            log_level=cfg.server.log_level,
            access_log=False,
        )
        # As uvicorn.run(workers=N) does, less its loading the app in this process too (the tokenizer, for nothing).
        supervisor = _Supervisor(config, uvicorn.Server(config).run, [config.bind_socket()], run_dir / FAILED, model)
        supervisor.run()
        if supervisor.failure:
            raise RuntimeError(supervisor.failure)
    finally:
        model.stop()
        os.environ.pop(MULTIPROC_ENV, None)
        os.environ.pop(RUN_DIR_ENV, None)
        shutil.rmtree(run_dir, ignore_errors=True)


FAILED = "failed"  # a worker that cannot build its gateway writes why here
_TAKES_TARGET = "target" in inspect.signature(Multiprocess.__init__).parameters


class _Supervisor(Multiprocess):
    """uvicorn's workers, restarted when one dies, except when one could not start: a bad router file or a
    missing model would fail in every worker forever, so the first such failure stops all, with its reason.
    The model process is restarted too; meanwhile the workers' local calls fail as a backend down would."""

    def __init__(self, config: Any, target: Any, sockets: list[Any], failed: Path, model: ModelProcess) -> None:
        # uvicorn 0.55 dropped the target argument (its workers always run Server.run, the target given here)
        if _TAKES_TARGET:
            super().__init__(config, target, sockets)
        else:
            super().__init__(config, sockets)
        self._failed = failed
        self._model = model
        self.failure: str | None = None

    def keep_subprocess_alive(self) -> None:
        if self._failed.exists():
            self.failure = self._failed.read_text(encoding="utf-8")
            self.should_exit.set()
            return
        if self._model.proc is not None and self._model.proc.poll() is not None and not self.should_exit.is_set():
            log.warning("the local model process exited with code %s; starting it again", self._model.proc.returncode)
            self._model.launch()
        super().keep_subprocess_alive()


class _WorkerApp:
    """The gateway's app, with the worker's process id on each answer and its live gauges removed at shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pid = os.getpid()
        self._tag = (WORKER_HEADER, str(self.pid).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":

            async def tagged(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), self._tag]
                await send(message)

            await self.app(scope, receive, tagged)
            return
        if scope["type"] == "lifespan":

            async def on_shutdown(message: dict[str, Any]) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(self.pid)
                await send(message)

            await self.app(scope, receive, on_shutdown)
            return
        await self.app(scope, receive, send)


def worker_app() -> _WorkerApp:
    """One worker's app (uvicorn calls this in each worker process): the gateway on the shared local model."""
    from hybridgate.serving.app import create_app
    from hybridgate.serving.backends.local_shared import SharedLlamaBackend
    from hybridgate.serving.build import build_gateway
    from hybridgate.serving.standin import _die_with_parent

    if sys.platform.startswith("linux"):
        _die_with_parent()  # a supervisor killed outright must not leave workers serving on its port
    run_dir = Path(os.environ[RUN_DIR_ENV])
    cfg = GatewayConfig.model_validate(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    logging.basicConfig(level=cfg.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hybridgate.serving.cpu import one_blas_thread

    one_blas_thread()
    if cfg.state.replica_id:  # each worker is a replica of its own in the decision log and the node statistics
        cfg.state.replica_id = f"{cfg.state.replica_id}-{os.getpid()}"
    c = cfg.local
    assert c.model_path is not None, "the supervisor resolves the model's path"
    local = SharedLlamaBackend(
        c.name, Path(c.model_path), run_dir, n_ctx=c.n_ctx, max_queue=c.max_queue, default_max_tokens=c.default_max_tokens
    )

    def build() -> Any:
        try:
            return build_gateway(cfg, local=local)  # type: ignore[arg-type] - it answers what the gateway asks of a local model
        except Exception as exc:
            (run_dir / FAILED).write_text(str(exc) if isinstance(exc, FileNotFoundError | ValueError | RuntimeError) else repr(exc))
            raise

    return _WorkerApp(create_app(cfg, build))
