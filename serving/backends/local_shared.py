"""A worker's local model: the machine's one model process (serving/model_server.py), reached over a Unix socket.

It stands where :class:`LlamaBackend` stands in a single-process gateway and answers the same calls. What the
router needs on every decision stays in the worker and costs no round trip: the prompt's token count (the
model's own chat template and tokenizer, loaded with ``vocab_only``: the vocabulary without the weights, a few
MB) and the model's queue (read from the shared-memory board the model process keeps).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from hybridgate.router import Route
from hybridgate.serving.backends.base import BackendUnavailable, ChatParams, Completion, Delta, Health
from hybridgate.serving.local_wire import (
    LoadBoard,
    completion_from_wire,
    delta_from_wire,
    error_from_wire,
    params_to_wire,
)
from hybridgate.serving.structured import local_messages


def _error_body(raw: bytes) -> dict[str, Any]:
    """The model process's error, or what its server said instead (a crash answers in plain text)."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"kind": "error", "message": raw[:200].decode("utf-8", "replace")}


class ChatTokenizer:
    """The model's chat template and tokenizer without its weights: what counting a prompt's tokens needs."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{path.name} carries no chat template (tokenizer.chat_template)")
        eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=self._text(eos_id), bos_token=self._text(bos_id), stop_token_ids=[eos_id]
        )

    def _text(self, token_id: int) -> str:
        return "" if token_id < 0 else self._llm.detokenize([token_id], special=True).decode("utf-8", errors="ignore")

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """As :meth:`LlamaBackend.render` counts them: the same template, special tokens and BOS rule."""
        out = self._formatter(messages=messages)
        return len(self._llm.tokenize(out.prompt.encode("utf-8"), add_bos=not out.added_special, special=True))

    def text_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0


class SharedLlamaBackend:
    """The calls the gateway makes of its local model, answered by the machine's model process."""

    def __init__(
        self,
        name: str,
        model_path: Path,
        run_dir: Path,
        *,
        n_ctx: int,
        max_queue: int,
        default_max_tokens: int,
        route: Route = Route.LOCAL,
    ) -> None:
        self.name = name
        self.route = route
        self.path = model_path
        self.model_id = model_path.stem
        self.n_ctx = n_ctx
        self.max_queue = max_queue
        self.default_max_tokens = default_max_tokens
        self.health = Health()
        self._tokenizer = ChatTokenizer(model_path)
        self._board = LoadBoard(run_dir / "model.board")
        # Generation has no deadline here, as in process; only reaching the model process does.
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(run_dir / "model.sock")),
            base_url="http://local-model",
            timeout=httpx.Timeout(None, connect=5.0),
        )

    # -- what the router reads on every decision, in this process -------------------------------------
    def count_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._tokenizer.prompt_tokens(local_messages(messages, None, None))

    def count_text_tokens(self, text: str) -> int:
        return self._tokenizer.text_tokens(text)

    @property
    def queue_depth(self) -> int:
        return self._board.read()[0]

    @property
    def expected_wait_s(self) -> float:
        return self._board.read()[1]

    # -- generation, in the model process -------------------------------------------------------------
    def _unreachable(self, exc: httpx.TransportError) -> BackendUnavailable:
        self.health.failed(str(exc))
        return BackendUnavailable(f"the shared local model is unreachable: {type(exc).__name__}: {exc}", backend=self.name)

    async def complete(self, params: ChatParams, *, confidence: bool = False) -> Completion:
        body = {"params": params_to_wire(params), "confidence": confidence}
        try:
            resp = await self._client.post("/complete", json=body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code != 200:
            raise error_from_wire(self.name, _error_body(resp.content))
        self.health.ok()
        return completion_from_wire(resp.json())

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        try:
            async with self._client.stream("POST", "/stream", json={"params": params_to_wire(params)}) as resp:
                if resp.status_code != 200:
                    raise error_from_wire(self.name, _error_body(await resp.aread()))
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    data = json.loads(line)
                    if "error" in data:
                        raise error_from_wire(self.name, data["error"])
                    yield delta_from_wire(data)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self.health.ok()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "route": self.route.value,
            "kind": "llama_cpp (shared by the workers)",
            "model": self.model_id,
            "path": str(self.path),
            "n_ctx": self.n_ctx,
            "queue_depth": self.queue_depth,
            "max_queue": self.max_queue,
            "loaded": True,  # a worker starts only once the model process answers
            **self.health.as_dict(),
        }

    async def aclose(self) -> None:
        await self._client.aclose()
        self._board.close()
