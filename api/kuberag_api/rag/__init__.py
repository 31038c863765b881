"""The RAG engine: parsing, chunking, embeddings, hybrid retrieval, answer generation.

The API imports only the names re-exported here.
"""

from kuberag_api.rag.embedding import (
    MODEL_NAME,
    Embedder,
    EmbeddingError,
    OnnxMiniLM,
    OpenAIEmbedder,
    build_embedder,
    load_default_embedder,
)
from kuberag_api.rag.engine import RagEngine
from kuberag_api.rag.generation import (
    NOT_FOUND_ANSWER,
    NOT_FOUND_ANSWER_ES,
    ExtractiveGenerator,
    GeneratedAnswer,
    GenerationError,
    Generator,
    OpenAIChatGenerator,
    build_generator,
    not_found_answer,
)
from kuberag_api.rag.parsing import SUPPORTED as SUPPORTED_TYPES
from kuberag_api.rag.store import RagStore, doc_id_for
from kuberag_api.rag.types import (
    DocumentError,
    DocumentInfo,
    DocumentTooComplex,
    IngestResult,
    Passage,
    UnsupportedDocument,
)

__all__ = [
    "MODEL_NAME",
    "NOT_FOUND_ANSWER",
    "NOT_FOUND_ANSWER_ES",
    "SUPPORTED_TYPES",
    "DocumentError",
    "DocumentInfo",
    "DocumentTooComplex",
    "Embedder",
    "EmbeddingError",
    "ExtractiveGenerator",
    "GeneratedAnswer",
    "GenerationError",
    "Generator",
    "IngestResult",
    "OnnxMiniLM",
    "OpenAIChatGenerator",
    "OpenAIEmbedder",
    "Passage",
    "RagEngine",
    "RagStore",
    "UnsupportedDocument",
    "build_embedder",
    "build_generator",
    "doc_id_for",
    "load_default_embedder",
    "not_found_answer",
]
