# kuberag: make help lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Built Kubernetes/helm/kwok binaries live outside the clone, reused across clones and sessions.
export KUBERAG_TOOLS_DIR ?= $(HOME)/.cache/kuberag/tools
PYTEST_ARGS ?=

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_.-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup

$(VENV)/.stamp: pyproject.toml hack/setup-venv.sh
	@bash hack/setup-venv.sh "$(PYTHON)" "$(VENV)"
	@touch $@

.PHONY: venv
venv: $(VENV)/.stamp ## Create the virtualenv with the api, operator and dev extras

.PHONY: system-deps
system-deps: ## Install Debian packages the tests and `make run` use (redis-server, etcd-server, ...)
	@bash hack/system-deps.sh

.PHONY: tools
tools: ## Build pinned kube-apiserver, controller-manager, scheduler, kubectl, kubelet, kube-proxy, kwok, helm, containerd, CoreDNS into $(KUBERAG_TOOLS_DIR)
	@bash hack/tools.sh

##@ Run

.PHONY: run
run: venv ## Serve the API on http://127.0.0.1:8000 over the bundled sample corpus (offline)
	@bash hack/system-deps.sh --optional redis-server
	@bash hack/run-local.sh "$(VENV)"

##@ Test

.PHONY: test
test: venv system-deps tools ## Unit and integration tests (real redis-server, real kube-apiserver), then as root the end-to-end suite
	@bash hack/pytest.sh $(PY) -m "unit or integration" $(PYTEST_ARGS)
	@if [ "$$(id -u)" -eq 0 ]; then $(MAKE) --no-print-directory e2e; else \
	  echo "make test: the end-to-end suite (tests/e2e, a real kubelet node) did NOT run: it needs root (containerd, kubelet, iptables); run 'sudo make e2e'"; fi

.PHONY: test-unit
test-unit: venv ## Unit tests only (no network, no external processes)
	@bash hack/pytest.sh $(PY) -m unit $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff and import-linter (the API and the operator never import each other)
	$(VENV)/bin/ruff check api operator contract tests
	$(VENV)/bin/lint-imports

.PHONY: bench
bench: venv system-deps ## Benchmarks: writes bench/results/*.json and a PNG plot
	$(PY) -m bench

IMAGE ?= ghcr.io/kuberag/kuberag:0.1.0

.PHONY: image
image: ## Build the kuberag image (API and operator; needs Docker)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make image needs a running Docker engine" >&2; exit 1; }
	docker build -t $(IMAGE) .

.PHONY: image-local
image-local: venv system-deps tools ## Build the kuberag, Redis, pause and CoreDNS images without Docker (root; cached in ~/.cache/kuberag/images)
	@$(PY) hack/image_local.py

.PHONY: e2e
e2e: venv system-deps tools ## End-to-end suite on a real kubelet node started here (root; see README "End-to-end")
	@[ "$$(id -u)" -eq 0 ] || { echo "make e2e needs root: it runs containerd, a kubelet and kube-proxy on this machine" >&2; exit 1; }
	@bash hack/pytest.sh $(PY) -m e2e tests/e2e $(E2E_PYTEST_ARGS)

.PHONY: e2e-kind
e2e-kind: venv ## The same end-to-end suite on a kind cluster (needs Docker and kind; not run on this machine)
	@bash hack/e2e-kind.sh $(PY)

##@ Monitoring

.PHONY: dashboards-preview
dashboards-preview: venv system-deps ## Render dashboards/preview.png from a real Prometheus scraping a loaded kuberag serve
	$(PY) -m dashboards.preview dashboards/preview.png

##@ Operator

.PHONY: generate
generate: venv ## Regenerate every copy from its source: CRD, RBAC, dashboards, rules, chart files (a test checks drift)
	$(PY) -m hack.generate

.PHONY: manifests
manifests: generate ## Alias of generate (the CRD and RBAC in manifests/ are among the copies)

.PHONY: bench-operator
bench-operator: venv system-deps tools ## Operator: apply-to-children latency, time to reconcile 100 RagServices
	$(PY) -m bench.operator
