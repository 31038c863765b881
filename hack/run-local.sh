#!/usr/bin/env bash
# make run: the API on http://127.0.0.1:8000 over the bundled sample corpus, offline.
# A local redis-server plays the pod's Redis sidecar when it is installed; otherwise the API runs
# with L1 + L3 only and says so.
set -euo pipefail
venv=${1:-.venv}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data_dir="$root/.data"
mkdir -p "$data_dir"
corpus="$root/api/kuberag_api/data/sample_corpus"
config="$data_dir/config.yaml"
# Written once; edit it while the server runs: rate limits, cache sizes, TTLs and the threshold
# apply live.
if [ ! -f "$config" ]; then
  cat > "$config" <<YAML
apiVersion: kuberag.io/v1alpha1
kind: ApiConfig
rateLimit:
  requestsPerMinute: 60
  burst: 10
corpus:
  path: $corpus
YAML
fi

redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if command -v redis-server >/dev/null 2>&1; then
  redis_port=6379
  if ! port_free "$redis_port"; then
    redis_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "run-local: port 6379 is busy, the Redis sidecar uses $redis_port"
  fi
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --maxmemory 128mb --maxmemory-policy allkeys-lru --dir "$data_dir" --logfile "$data_dir/redis.log" &
  redis_pid=$!
  for _ in $(seq 50); do port_free "$redis_port" || break; sleep 0.1; done
  export KUBERAG_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  echo "run-local: redis-server (the sidecar) on 127.0.0.1:$redis_port"
else
  export KUBERAG_REDIS_URL=""
  echo "run-local: redis-server is not installed: running with the L1 and L3 caches only (no L2)"
fi

export KUBERAG_HOST="${KUBERAG_HOST:-127.0.0.1}"
export KUBERAG_PORT="${KUBERAG_PORT:-8000}"
export KUBERAG_METRICS_PORT="${KUBERAG_METRICS_PORT:-9090}"
export KUBERAG_DATA_DIR="$data_dir"
export KUBERAG_CONFIG="$config"
if [ -z "${KUBERAG_ADMIN_API_KEY:-}" ]; then
  echo "run-local: KUBERAG_ADMIN_API_KEY is not set: admin routes (DELETE /cache, /documents) answer 403"
fi
echo "run-local: API on http://$KUBERAG_HOST:$KUBERAG_PORT (OpenAPI at /schema), Prometheus metrics on :$KUBERAG_METRICS_PORT"
"$venv/bin/kuberag" serve &
api_pid=$!
trap 'kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; cleanup' EXIT INT TERM
wait "$api_pid"
