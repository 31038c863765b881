"""kuberag's query API: a Litestar service with caches, rate limits, retrieval and metrics."""

from __future__ import annotations

__version__ = "0.1.0"
