"""The routing classifier with the real embedding model: vectors, data, heads, and the safe artifact format."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from hybridgate.classifiers.artifact import (
    ArtifactError,
    default_router_path,
    load_router,
    read_header,
    resolve_router,
    save_router,
)
from hybridgate.classifiers.data import DataError, RoutingData, load_routing_data, split_of
from hybridgate.classifiers.embedder import (
    CachedEmbedder,
    Embedder,
    EmbedderError,
    TorchEmbedder,
    load_embedder,
    max_difference,
)
from hybridgate.classifiers.evaluation import evaluate
from hybridgate.classifiers.heads import HEADS, HeadError, make_head
from hybridgate.classifiers.training import fit_router

FIXTURE = Path(__file__).parent / "fixtures" / "routing"
WEAK, STRONG = "small-model", "large-model"


@pytest.fixture(scope="module")
def data() -> RoutingData:
    return load_routing_data(FIXTURE, WEAK, STRONG)


@pytest.fixture(scope="module")
def vectors(data: RoutingData, query_embedder: Embedder) -> np.ndarray:
    return query_embedder.encode(list(data.prompts))


@pytest.mark.parametrize("which", ["transformer_embedder", "query_embedder"])
def test_embedding_shape_norm_and_determinism(which: str, request: pytest.FixtureRequest) -> None:
    emb: Embedder = request.getfixturevalue(which)
    texts = ["What is the capital of France?", "Integrate x^2 from 0 to 3.", "What's the capital city of Italy?"]
    a, b = emb.encode(texts), emb.encode(texts)
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert float(a[0] @ a[2]) > float(a[0] @ a[1])  # the two capital questions are nearer each other


def test_default_engine_matches_torch(transformer_embedder: Embedder) -> None:
    if transformer_embedder.engine == "torch":
        pytest.skip("the default engine is torch on this machine: nothing to compare")
    assert max_difference(transformer_embedder, TorchEmbedder()) < 1e-4


def test_long_queries_keep_their_first_word_pieces(transformer_embedder: Embedder) -> None:
    long = "The quick brown fox jumps over the lazy dog. " * 80  # ~800 word pieces, over the 256 limit
    a, b = transformer_embedder.encode([long, long + " And then a completely different ending about tax law."])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_static_vectors_are_the_mean_of_the_pieces(query_embedder: Embedder, transformer_embedder: Embedder) -> None:
    """Read the shipped files directly (not through model2vec): a query's vector is the normalised mean of its
    pieces' rows, and a piece's row is the transformer's output for that piece alone."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    folder = query_embedder.folder  # type: ignore[attr-defined]
    table = load_file(str(folder / "model.safetensors"))["embeddings"]
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode("routing matters", add_special_tokens=False).ids
    expect = table[ids].astype(np.float32).mean(axis=0)
    np.testing.assert_allclose(query_embedder.encode(["routing matters"])[0], expect / np.linalg.norm(expect), atol=1e-6)
    assert query_embedder.name == "all-MiniLM-L6-v2-static" and not query_embedder.encode([""]).any()
    cls_sep = np.array([[101, ids[0], 102]], dtype=np.int64)  # [CLS] piece [SEP]
    own = transformer_embedder.piece_states(cls_sep)[0, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(table[ids[0]].astype(np.float32), own, atol=2e-3)  # float16 storage


def test_distil_writes_smaller_vectors_that_still_rank_by_meaning(transformer_embedder: Embedder, tmp_path: Path) -> None:
    from hybridgate.classifiers.embedder import resolve_model_path
    from hybridgate.classifiers.static_vectors import StaticEmbedder, distil_static, static_name

    name = static_name("all-MiniLM-L6-v2", 64, "int8")
    out = distil_static(transformer_embedder, resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json", tmp_path / "v", name=name, dims=64, dtype="int8")
    emb = load_embedder(str(out))
    assert isinstance(emb, StaticEmbedder) and emb.name == "all-MiniLM-L6-v2-static-pca64-int8" and emb.dim == 64
    assert (out / "model.safetensors").stat().st_size < 2.1e6  # 30,522 pieces x 64 bytes
    a, b, c = emb.encode(["What is the capital of France?", "Which city is the capital of Italy?", "def merge(a, b): return a + b"])
    assert float(a @ b) > float(a @ c) + 0.1
    with pytest.raises(EmbedderError, match="no such static vectors"):
        load_embedder("nothing-here-static-pca3")


def test_lru_cache_serves_repeats_and_evicts_the_oldest(query_embedder: Embedder) -> None:
    cached = CachedEmbedder(query_embedder, size=2)
    first = cached.encode(["one"])
    cached.encode(["one", "two"])
    assert (cached.hits, cached.misses) == (1, 2)
    cached.encode(["three"])  # evicts "one"
    again = cached.encode(["one"])
    assert cached.misses == 4
    np.testing.assert_array_equal(first, again)


def test_loader_split_contamination_and_errors(data: RoutingData, tmp_path: Path) -> None:
    assert len(data) == 599 and data.dropped_contaminated == 1
    assert set(data.groups) == {"fixture_arithmetic", "fixture_code", "fixture_trivia"}
    # The protocol's rule, spelled out on one prompt.
    p = data.prompts[0]
    assert split_of(p) == ("train" if int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) / 2**32 < 0.1 else "test")
    assert len(data.subset("train")) + len(data.subset("test")) == len(data)
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,a\nhello,True\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column"):
        load_routing_data(bad, "a", "b")
    bad.write_text("prompt,a,b\nhello,True,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.csv:2 column b: expected True or False"):
        load_routing_data(bad, "a", "b")


@pytest.mark.parametrize("kind", list(HEADS))
def test_every_head_learns_the_fixture(kind: str, data: RoutingData, vectors: np.ndarray) -> None:
    train = data.subset("train")
    mask = np.array([split_of(p) == "train" for p in data.prompts])
    if kind in ("outcomes", "pair-blend", "pair-blend-mmlu"):  # learn from many models' outcomes, not one pair's gains: they say so
        with pytest.raises(HeadError, match="many models' outcomes"):
            fit_router(train, vectors[mask], kind, embedder="all-MiniLM-L6-v2")
        return
    model = fit_router(train, vectors[mask], kind, embedder="all-MiniLM-L6-v2")
    test = data.subset("test")
    scores = model.score(vectors[~mask], test.prompts)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    ev = evaluate(kind, scores, test)
    assert ev.curve.apgr > 0.6, ev.curve.summary()  # random is 0.5; topic decides the outcome here
    q = model.meta["calibration"]["quantiles"]
    assert len(q) == 101 and q == sorted(q)


def test_unknown_head_or_setting_is_refused() -> None:
    with pytest.raises(HeadError, match="unknown head 'forest'"):
        make_head("forest")
    with pytest.raises(HeadError, match="has no setting depth"):
        make_head("logistic", {"depth": 3})


@pytest.mark.parametrize("features", [False, True])
def test_artifact_round_trip(features: bool, data: RoutingData, vectors: np.ndarray, tmp_path: Path) -> None:
    model = fit_router(data, vectors, "logistic", {"C": 0.5}, embedder="all-MiniLM-L6-v2", features=features)
    header = save_router(model, tmp_path / "r", name="fixture-router")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["arrays.npz", "router.json"]
    loaded = load_router(tmp_path / "r", embedder="all-MiniLM-L6-v2", dim=384)
    np.testing.assert_allclose(loaded.score(vectors, data.prompts), model.score(vectors, data.prompts), rtol=1e-6)
    assert header["embedder"] == {"name": "all-MiniLM-L6-v2", "dim": 384}
    assert header["head"] == {"kind": "logistic", "params": {"C": 0.5, "target": "label"}}
    assert header["training"]["data_sha256"] == data.fingerprint() and header["training"]["rows"] == len(data)
    assert header["arrays"]["sha256"] == hashlib.sha256((tmp_path / "r" / "arrays.npz").read_bytes()).hexdigest()
    assert {"numpy", "scikit-learn", "python"} <= set(header["libraries"])
    assert loaded.version == header["version"] == header["arrays"]["sha256"][:12]


def _saved(data: RoutingData, vectors: np.ndarray, folder: Path) -> Path:
    save_router(fit_router(data, vectors, "logistic", embedder="all-MiniLM-L6-v2", calibrate=False), folder)
    return folder


def test_tampered_arrays_are_refused(data: RoutingData, vectors: np.ndarray, tmp_path: Path) -> None:
    folder = _saved(data, vectors, tmp_path / "r")
    blob = bytearray((folder / "arrays.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / "arrays.npz").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        load_router(folder)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_a_pickle_is_never_loaded_even_with_a_matching_hash(data: RoutingData, vectors: np.ndarray, tmp_path: Path) -> None:
    folder = _saved(data, vectors, tmp_path / "r")
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.savez(buf, **{"head.coef": np.array([_Payload(marker)], dtype=object), "head.intercept": np.zeros(1)})
    (folder / "arrays.npz").write_bytes(buf.getvalue())
    header = json.loads((folder / "router.json").read_text())
    header["arrays"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()  # an attacker can fix the hash too
    (folder / "router.json").write_text(json.dumps(header))
    with pytest.raises(ArtifactError, match="pickle"):
        load_router(folder)
    assert not marker.exists()


def test_router_for_another_embedder_is_refused(data: RoutingData, vectors: np.ndarray, tmp_path: Path) -> None:
    folder = _saved(data, vectors, tmp_path / "r")
    with pytest.raises(ArtifactError, match="trained on 'all-MiniLM-L6-v2' embeddings, but the embedder loaded is 'bge-small'"):
        load_router(folder, embedder="bge-small", dim=384)
    with pytest.raises(ArtifactError, match="expects 384-dimensional embeddings, the embedder gives 768"):
        load_router(folder, embedder="all-MiniLM-L6-v2", dim=768)
    (folder / "router.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_header(folder)


@pytest.mark.parametrize("name", ["blend-static", "shape-static", "mmlu-static", "mmlu-minilm"])
def test_the_shipped_routers_load_and_are_small(name: str) -> None:
    folder = resolve_router(name)
    header = read_header(folder)
    model = load_router(folder, embedder=header["embedder"]["name"], dim=384)
    # Arrays only: a few hundred KB, or 1.2 MB for the one that keeps its training queries' vectors (neighbours)
    assert (folder / "arrays.npz").stat().st_size < (1_200_000 if header["head"]["kind"] == "blend" else 200_000)
    assert header["training"]["rows"] == 1413  # the MMLU train split
    assert header["metrics"]["apgr"] > 0.603  # RouteLLM's best published MMLU router
    assert 0.0 < model.default_threshold() < 1.0


def test_the_default_is_the_shipped_pair_blend_mmlu_router_and_blend_static_stays_shipped() -> None:
    assert default_router_path() == resolve_router(None) == resolve_router("pair-blend-mmlu-static")
    assert read_header(resolve_router("blend-static"))["head"]["kind"] == "blend"  # the reference the default was chosen against


def test_neighbours_widen_their_memory_once_and_again_when_it_is_replaced() -> None:
    rng = np.random.default_rng(3)
    head = make_head("knn", {"k": 5})
    head.load_arrays({"memory": rng.random((40, 8)).astype(np.float16), "gains": rng.integers(-1, 2, 40).astype(np.int8)})
    x = rng.random((3, 8)).astype(np.float32)

    def fresh() -> np.ndarray:
        return head._score(x @ head.memory.astype(np.float32).T)

    assert np.array_equal(head.score(x), fresh())
    assert head.wide_memory() is head.wide_memory()  # widened once, not per query
    # A reload replaces the memory: the cached copy must follow it, or the router scores with the old neighbours.
    head.load_arrays({"memory": rng.random((40, 8)).astype(np.float16), "gains": head.gains})
    assert np.array_equal(head.score(x), fresh())
