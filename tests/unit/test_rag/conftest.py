import pytest
from kuberag_api.rag import load_default_embedder


@pytest.fixture(scope="session")
def embedder():
    """The real local model, loaded once for the whole session (about 2 s)."""
    return load_default_embedder()
