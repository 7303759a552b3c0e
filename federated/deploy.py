"""The Flower apps for a real federation: gateways as SuperNodes, a SuperLink, ``flwr run``.

``client_app`` reads the gateway's own labels from the gateway on the same
device (``GET /v1/hybridgate/labels`` on loopback; ``gateway-url`` in the
SuperNode's node config) or from an exported file (``labels-file``), so the
labels never leave the device: only weights and counts go to the SuperLink.
After the last round it also answers one query with quantiles of the new
model's scores on its labels, so the server can calibrate thresholds without
seeing any score, and with its gateway's node-choice weights (from
``GET /v1/hybridgate/nodes``, or ``node-weights-file``). ``server_app`` runs the
strategy named in the run config, pools the node weights (``node_weights.py``)
and publishes both as a router folder that gateways hot-reload.

Both are referenced from the app folder that ``hybridgate fl server`` writes
(``hybridgate.federated.deploy:server_app`` and ``...:client_app``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from hybridgate.classifiers.artifact import save_router
from hybridgate.classifiers.heads import GradientLogisticHead
from hybridgate.classifiers.model import RouterModel, calibration
from hybridgate.classifiers.node_weights import NodeWeights
from hybridgate.federated import node_weights
from hybridgate.federated.apps import REFUSED, ServerPlan, make_client_app, run_plan
from hybridgate.federated.checks import RequestRejected, checked_weights, pooled_quantiles
from hybridgate.federated.task import LocalData, scores

log = logging.getLogger(__name__)
MIN_QUANTILE_LABELS = 20
KEY_ENV = "HYBRIDGATE_API_KEY"


def gateway_headers(cfg: Any) -> dict[str, str]:
    """The gateway's key for its own endpoints: from the environment, or a file the node config names. Never from
    the node config itself, which is a command-line argument of the SuperNode, readable by every local user."""
    if "api-key" in cfg:
        raise ValueError(f"a key in the node config shows in the process list: set {KEY_ENV} or pass --api-key-file")
    key = os.environ.get(KEY_ENV)
    if "api-key-file" in cfg:
        key = Path(str(cfg["api-key-file"])).read_text(encoding="utf-8").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def from_gateway(cfg: Any, path: str, **params: Any) -> Any:
    """What the device's own gateway answers at ``path`` (``gateway-url``, on loopback), with its key."""
    url = str(cfg.get("gateway-url", "http://127.0.0.1:8080")).rstrip("/")
    return httpx.get(f"{url}{path}", params=params, headers=gateway_headers(cfg), timeout=30).json()


def gateway_labels(context: Context) -> LocalData:
    """This device's labelled vectors: from its gateway over loopback, or from a file."""
    cfg = context.node_config
    embedder = str(cfg.get("embedder", "all-MiniLM-L6-v2-static"))
    if "labels-file" in cfg:
        with np.load(str(cfg["labels-file"]), allow_pickle=False) as npz:
            return LocalData(npz["x"].astype(np.float32), npz["label"].astype(np.int8))
    rows = from_gateway(cfg, "/v1/hybridgate/labels", limit=10_000)["data"]
    rows = [r for r in rows if r.get("embedder") == embedder]
    if not rows:
        return LocalData(np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.int8))
    return LocalData(np.asarray([r["vector"] for r in rows], dtype=np.float32), np.asarray([r["label"] for r in rows], dtype=np.int8))


def gateway_node_weights(context: Context) -> tuple[NodeWeights, int] | None:
    """This device's node-choice weights: from a file saved from its gateway, or from the gateway on loopback. A
    device that trains from an exported labels file and names no weights file has none to send."""
    cfg = context.node_config
    if "node-weights-file" in cfg:
        return node_weights.file_source(str(cfg["node-weights-file"]))
    if "labels-file" in cfg:
        return None
    return node_weights.from_description(from_gateway(cfg, "/v1/hybridgate/nodes"))


client_app = make_client_app(gateway_labels, node_weights=gateway_node_weights)


@client_app.query()
def _score_quantiles(msg: Message, context: Context) -> Message:
    """Quantiles of the new model's scores on this gateway's labels: 101 numbers, never a score or a label. The
    vector to score with is checked first (a crafted one could read the labels out, one query at a time)."""
    data = gateway_labels(context)
    try:
        weights = checked_weights(msg.content["arrays"].to_numpy_ndarrays()[0], data.dim)
    except (RequestRejected, KeyError, IndexError) as exc:
        return Message(Error(code=REFUSED, reason=f"the gateway refuses: {exc}"), reply_to=msg)
    if len(data) < MIN_QUANTILE_LABELS:  # quantiles of a handful of scores would be those scores
        return Message(content=RecordDict({"metrics": MetricRecord({"quantiles": [], "num-examples": 0})}), reply_to=msg)
    q = np.quantile(scores(weights, data.x), np.linspace(0, 1, 101)).tolist()
    return Message(content=RecordDict({"metrics": MetricRecord({"quantiles": q, "num-examples": len(data)})}), reply_to=msg)


def _pooled_quantiles(grid: Grid, weights: np.ndarray) -> list[float] | None:
    """Each gateway's score quantiles under the final model, checked, averaged by (capped) label count."""
    nodes = list(grid.get_node_ids())
    messages = [
        Message(content=RecordDict({"arrays": ArrayRecord([weights.astype(np.float32)])}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = []
    for reply in grid.send_and_receive(messages, timeout=120):
        if reply.has_error() or "metrics" not in reply.content.metric_records:
            continue
        m = reply.content["metrics"]
        if m.get("num-examples"):  # a gateway with too few labels sends none
            replies.append((m.get("quantiles"), m.get("num-examples")))
    pooled, refused = pooled_quantiles(replies)
    for why in refused:
        log.warning("score quantiles refused: %s", why)
    return pooled


def publish(
    folder: Path, weights: np.ndarray, embedder: str, meta: dict[str, Any], quantiles: list[float] | None, quantiles_source: str
) -> dict[str, Any]:
    """The global head as a router folder in the classifier's safe format."""
    head = GradientLogisticHead()
    head.weights = weights.astype(np.float32)
    model = RouterModel(head, embedder, int(weights.size - 1))
    model.meta = dict(meta)
    if quantiles:
        model.meta["calibration"] = calibration(quantiles, quantiles_source)
    return save_router(model, folder, name=str(meta.get("name", "federated")))


server_app = ServerApp()


@server_app.main()
def _server(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    dim = int(cfg.get("dim", 384))
    plan = ServerPlan(
        strategy=str(cfg.get("strategy", "fedavg")),
        rounds=int(cfg.get("num-server-rounds", 3)),
        local_epochs=int(cfg.get("local-epochs", 5)),
        lr=float(cfg.get("lr", 0.5)),
        proximal_mu=float(cfg.get("proximal-mu", 0.1)),
        max_update_norm=float(cfg.get("max-update-norm", 10.0)),
        initial=np.zeros(dim + 1, dtype=np.float32),
        expected_clients=int(cfg.get("min-clients", 2)),
    )
    weights = run_plan(grid, plan)
    fleet, pooled = node_weights.pool(grid, NodeWeights(), min_answers=int(cfg.get("node-weights-min-answers", 20)))
    log.warning("node weights: %s from %d of %d gateways", None if fleet is None else fleet.as_dict(), pooled["used"], pooled["asked"])
    out = str(cfg.get("publish-dir", ""))
    if out:
        meta: dict[str, Any] = {
            "name": str(cfg.get("router-name", "federated")),
            "training": {"federated": True, "strategy": plan.strategy, "rounds": plan.rounds, "clients": plan.expected_clients,
                         "rejected_updates": len(plan.rejected)},
        }
        if fleet is not None:
            meta["node_weights"] = {**fleet.as_dict(), "gateways": pooled["used"], "answers": pooled["answers"]}
        header = publish(
            Path(out), weights, str(cfg.get("embedder", "all-MiniLM-L6-v2-static")), meta, _pooled_quantiles(grid, weights),
            "gateways' score quantiles under this model, averaged by label count",
        )
        log.warning("published router %s version %s to %s", header["name"], header["version"], out)
