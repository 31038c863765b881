#!/usr/bin/env bash
# `make e2e-kind`: the end-to-end suite (tests/e2e) on a kind cluster, for machines with Docker.
# Creates the cluster, builds the kuberag image with the Dockerfile, loads it and the Redis
# sidecar image with `kind load`, runs the suite, deletes the cluster. Not run on this project's
# Docker-less machines (there `make e2e` runs the same tests on a real kubelet node).
set -euo pipefail
py=${1:-.venv/bin/python}
cluster=${KUBERAG_KIND_CLUSTER:-kuberag-e2e}
image=localhost/kuberag:e2e
redis_image=${KUBERAG_E2E_REDIS_IMAGE:-redis:7.4-alpine}
die() { echo "make e2e-kind: $*" >&2; exit 1; }
command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "needs a running Docker engine"
command -v kind >/dev/null || die "needs kind (go install sigs.k8s.io/kind@latest)"
bash hack/tools.sh  # kubectl and helm for the tests
kubeconfig=$(mktemp)
trap 'kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; rm -f "$kubeconfig"' EXIT
kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 180s
docker build -t "$image" .
docker pull "$redis_image"
kind load docker-image --name "$cluster" "$image" "$redis_image"
KUBERAG_E2E_KIND=$cluster KUBERAG_E2E_KUBECONFIG=$kubeconfig KUBERAG_E2E_IMAGE=$image \
  KUBERAG_E2E_REDIS_IMAGE=$redis_image bash hack/pytest.sh "$py" -m e2e tests/e2e
