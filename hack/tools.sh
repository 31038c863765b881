#!/usr/bin/env bash
# Builds the pinned control-plane tools the integration tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok, helm), the real node's (kubelet,
# kube-proxy, containerd v2, CoreDNS) and the shared vector store (weaviate-server) from Go
# modules, and copies the prometheus-operator CRDs, into ${KUBERAG_TOOLS_DIR:-~/.cache/kuberag/tools}.
# Outputs are keyed by version, so a second run (or another clone) is a no-op.
# KUBEBUILDER_ASSETS=DIR: take kube-apiserver and etcd from DIR instead of building/Debian.
# Writes $TOOLS/paths.json (absolute binary paths) for tests/fixtures/controlplane.py.
set -euo pipefail

K8S_VERSION=v1.35.4
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5
# containerd v2 rather than Debian 12's 1.6: kubelet v1.35 is the last release that accepts
# containerd 1.x (and 1.6 lacks the CRI RuntimeConfig call); v2 builds here in ~2 min once.
CONTAINERD_VERSION=v2.2.9
COREDNS_VERSION=v1.14.7
PROM_OPERATOR_VERSION=v0.85.0
WEAVIATE_VERSION=v1.35.2

TOOLS=${KUBERAG_TOOLS_DIR:-$HOME/.cache/kuberag/tools}
mkdir -p "$TOOLS"
TOOLS=$(cd "$TOOLS" && pwd)
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
# Go from the standard install location when it is not on PATH (a minimal CI environment).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi

log() { printf '[tools] %s\n' "$*" >&2; }
die() { trap - EXIT; printf '[tools] error: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || printf "[tools] error: failed (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' EXIT

# Parallel `make tools` runs (several clones, several engineers) share one cache: one builds at a time.
exec 9>"$TOOLS/.lock"
if ! flock -n 9; then log "another hack/tools.sh is building into $TOOLS; waiting for it"; flock 9; fi

command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.25 for Kubernetes $K8S_VERSION)"

# --- Kubernetes control plane -----------------------------------------------------------------
build_kubernetes() {
  local out=$TOOLS/kubernetes-$K8S_VERSION bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local want=() b
  for b in "${bins[@]}"; do
    if [ "$b" = kube-apiserver ] && [ -n "${KUBEBUILDER_ASSETS:-}" ]; then continue; fi
    [ -x "$out/bin/$b" ] || want+=("$b")
  done
  if [ ${#want[@]} -eq 0 ]; then log "kubernetes $K8S_VERSION: up to date in $out/bin"; return; fi
  log "kubernetes $K8S_VERSION: building ${want[*]} (cold build takes many minutes on 2 cores)"
  local mod=$out/module
  mkdir -p "$mod" "$out/bin"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 with `replace => ./staging/...`,
  # which `go install pkg@version` refuses; a throwaway module pins each to its v0.<minor>.<patch>.
  local info gomod
  info=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION") ||
    die "cannot download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  gomod=$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || die "no go.mod for k8s.io/kubernetes@$K8S_VERSION in the module cache"
  local staging_version=v0.${K8S_VERSION#v1.}
  {
    echo "module kuberag.invalid/k8sbins"
    echo
    echo "go $(sed -n 's/^go \(.*\)$/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk '/=> \.\/staging\// {print $1}' "$gomod" | while read -r m; do
      echo "	$m => $m $staging_version"
    done
    echo ")"
  } >"$mod/go.mod"
  printf 'package main\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n\t_ "k8s.io/kubernetes/cmd/kubelet/app"\n\t_ "k8s.io/kubernetes/cmd/kube-proxy/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n\nfunc main() {}\n' >"$mod/tools.go"
  log "kubernetes $K8S_VERSION: resolving modules ($(grep -c '=>' "$mod/go.mod") staging replaces at $staging_version)"
  (cd "$mod" && go mod tidy) || die "go mod tidy failed for the kubernetes throwaway module ($mod/go.mod)"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  for b in "${want[@]}"; do
    log "kubernetes $K8S_VERSION: go build $b"
    local start=$SECONDS
    (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$out/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b") ||
      die "go build k8s.io/kubernetes/cmd/$b@$K8S_VERSION failed (see above)"
    mv "$out/bin/$b.tmp" "$out/bin/$b"
    log "kubernetes $K8S_VERSION: $b built in $((SECONDS - start))s"
  done
}

# --- go install tools (no replace directives upstream) ------------------------------------------
go_install() { # name version package [extra ldflags]
  local name=$1 version=$2 pkg=$3 ldflags="-s -w ${4:-}" out=$TOOLS/$1-$2
  # The link flags are part of what was built: a binary linked with other -X values is rebuilt.
  if [ -x "$out/bin/$name" ] && [ "$(cat "$out/ldflags" 2>/dev/null)" = "$ldflags" ]; then
    log "$name $version: up to date in $out/bin"; return
  fi
  log "$name $version: go install $pkg@$version"
  local start=$SECONDS
  mkdir -p "$out"
  GOBIN="$out/bin.tmp" go install -trimpath -ldflags "$ldflags" "$pkg@$version" ||
    die "go install $pkg@$version failed (see above)"
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
  printf '%s' "$ldflags" >"$out/ldflags"
  log "$name $version: built in $((SECONDS - start))s"
}

# containerd, its runc shim and ctr, one `go install` (same module and version); no_btrfs: no cgo.
build_containerd() {
  local out=$TOOLS/containerd-$CONTAINERD_VERSION mod=github.com/containerd/containerd/v2
  if [ -x "$out/bin/containerd" ] && [ -x "$out/bin/containerd-shim-runc-v2" ] && [ -x "$out/bin/ctr" ]; then
    log "containerd $CONTAINERD_VERSION: up to date in $out/bin"; return
  fi
  log "containerd $CONTAINERD_VERSION: go install containerd, containerd-shim-runc-v2, ctr"
  local start=$SECONDS
  mkdir -p "$out"
  GOBIN="$out/bin.tmp" go install -trimpath -tags no_btrfs \
    -ldflags "-s -w -X $mod/version.Version=$CONTAINERD_VERSION -X $mod/version.Package=$mod" \
    "$mod/cmd/containerd@$CONTAINERD_VERSION" "$mod/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$mod/cmd/ctr@$CONTAINERD_VERSION" || die "go install $mod/cmd/...@$CONTAINERD_VERSION failed (see above)"
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
  log "containerd $CONTAINERD_VERSION: built in $((SECONDS - start))s"
}

# CoreDNS with only the plugins the e2e Corefile (tests/fixtures/coredns.yaml) uses, by CoreDNS's
# documented external build: a main package importing coremain and those plugins, with the
# directive order of CoreDNS's plugin.cfg. The stock build links every plugin (cloud DNS SDKs,
# etcd, dnstap, ...): 406 s cold here, against about a third of that for this one.
COREDNS_PLUGINS="errors health ready kubernetes cache loadbalance"
build_coredns() {
  local out=$TOOLS/coredns-$COREDNS_VERSION mod=$TOOLS/coredns-$COREDNS_VERSION/module
  if [ -x "$out/bin/coredns" ] && [ "$(cat "$out/plugins" 2>/dev/null)" = "$COREDNS_PLUGINS" ]; then
    log "coredns $COREDNS_VERSION: up to date in $out/bin (plugins: $COREDNS_PLUGINS)"; return
  fi
  log "coredns $COREDNS_VERSION: building with the plugins $COREDNS_PLUGINS"
  local start=$SECONDS info dir
  rm -rf "$mod" && mkdir -p "$mod" "$out"
  info=$(cd "$mod" && go mod download -json "github.com/coredns/coredns@$COREDNS_VERSION") ||
    die "cannot download github.com/coredns/coredns@$COREDNS_VERSION from the Go module proxy"
  dir=$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -f "$dir/plugin.cfg" ] || die "no plugin.cfg in github.com/coredns/coredns@$COREDNS_VERSION"
  printf 'module kuberag.invalid/coredns\n\ngo %s\n\nrequire github.com/coredns/coredns %s\n' \
    "$(sed -n 's/^go \(.*\)$/\1/p' "$dir/go.mod")" "$COREDNS_VERSION" >"$mod/go.mod"
  # plugin.cfg lines are "directive:package" in execution order (package relative to plugin/).
  awk -F: -v want=" $COREDNS_PLUGINS " '
    /^[a-z]/ && index(want, " " $1 " ") { dirs = dirs sprintf("\t\"%s\",\n", $1); pkgs = pkgs sprintf("\t_ \"github.com/coredns/coredns/plugin/%s\"\n", $2); n++ }
    END {
      if (n != split(want, w, " ")) { print "plugin.cfg lacks some of:" want > "/dev/stderr"; exit 1 }
      printf "// Generated by hack/tools.sh: CoreDNS with the e2e suite'"'"'s plugins only.\npackage main\n\nimport (\n"
      printf "\t\"github.com/coredns/coredns/core/dnsserver\"\n\t\"github.com/coredns/coredns/coremain\"\n%s)\n\n", pkgs
      printf "func init() {\n\tdnsserver.Directives = []string{\n%s\t}\n}\n\nfunc main() { coremain.Run() }\n", dirs
    }' "$dir/plugin.cfg" >"$mod/main.go" || die "cannot select the plugins $COREDNS_PLUGINS from $dir/plugin.cfg"
  (cd "$mod" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$out/coredns.tmp" .) ||
    die "go build of CoreDNS $COREDNS_VERSION ($mod) failed (see above)"
  mkdir -p "$out/bin" && mv "$out/coredns.tmp" "$out/bin/coredns"
  printf '%s' "$COREDNS_PLUGINS" >"$out/plugins"
  log "coredns $COREDNS_VERSION: built in $((SECONDS - start))s"
}

# --- prometheus-operator CRDs (copied from the released module, never hand-written) ----------------
copy_prometheus_crds() {
  local out=$TOOLS/prometheus-operator-crds-$PROM_OPERATOR_VERSION
  local names=(servicemonitors podmonitors prometheusrules) n
  if [ -f "$out/monitoring.coreos.com_prometheusrules.yaml" ]; then log "prometheus-operator CRDs $PROM_OPERATOR_VERSION: up to date in $out"; return; fi
  log "prometheus-operator CRDs $PROM_OPERATOR_VERSION: downloading the module"
  local dir tmp
  tmp=$(mktemp -d)
  dir=$(cd "$tmp" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p') || true
  rm -rf "$tmp"
  [ -n "$dir" ] && [ -d "$dir" ] || die "cannot download github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION"
  mkdir -p "$out.tmp"
  for n in "${names[@]}"; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$n.yaml" "$out.tmp/" ||
      die "monitoring.coreos.com_$n.yaml not found in prometheus-operator $PROM_OPERATOR_VERSION"
  done
  chmod 644 "$out.tmp"/*.yaml
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# helm's release ldflags (its Makefile): without them `helm version` says v3.19 and offline
# capabilities (lint, template) assume Kubernetes 1.20, which fails a chart's kubeVersion. The
# Kubernetes version is the one helm's client-go stands for (v0.34 -> 1.34), as its Makefile derives it.
HELM_K8S_MINOR=34
build_helm() {
  local x="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" p
  for p in pkg/lint/rules pkg/chartutil; do
    x+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$x"
}

# The shared vector store of the Weaviate tests (a cold build takes 5-12 minutes on 2 cores).
build_weaviate() {
  go_install weaviate-server "$WEAVIATE_VERSION" github.com/weaviate/weaviate/cmd/weaviate-server \
    "-X github.com/weaviate/weaviate/usecases/build.Version=$WEAVIATE_VERSION"
}

etcd_binary() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then echo "$KUBEBUILDER_ASSETS/etcd"; return; fi
  local e
  e=$(command -v etcd 2>/dev/null || true)
  [ -n "$e" ] || [ ! -x /usr/bin/etcd ] || e=/usr/bin/etcd
  [ -n "$e" ] || die "etcd not found: run 'make system-deps' (Debian etcd-server) or set KUBEBUILDER_ASSETS"
  echo "$e"
}

write_paths() {
  local apiserver=$TOOLS/kubernetes-$K8S_VERSION/bin/kube-apiserver
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no kube-apiserver"
    apiserver=$KUBEBUILDER_ASSETS/kube-apiserver
  fi
  local etcd
  etcd=$(etcd_binary)
  cat >"$TOOLS/paths.json.tmp" <<EOF
{
  "kubernetes_version": "$K8S_VERSION",
  "etcd": "$etcd",
  "kube-apiserver": "$apiserver",
  "kube-controller-manager": "$TOOLS/kubernetes-$K8S_VERSION/bin/kube-controller-manager",
  "kube-scheduler": "$TOOLS/kubernetes-$K8S_VERSION/bin/kube-scheduler",
  "kubectl": "$TOOLS/kubernetes-$K8S_VERSION/bin/kubectl",
  "kubelet": "$TOOLS/kubernetes-$K8S_VERSION/bin/kubelet",
  "kube-proxy": "$TOOLS/kubernetes-$K8S_VERSION/bin/kube-proxy",
  "containerd": "$TOOLS/containerd-$CONTAINERD_VERSION/bin/containerd",
  "containerd-shim-runc-v2": "$TOOLS/containerd-$CONTAINERD_VERSION/bin/containerd-shim-runc-v2",
  "ctr": "$TOOLS/containerd-$CONTAINERD_VERSION/bin/ctr",
  "coredns": "$TOOLS/coredns-$COREDNS_VERSION/bin/coredns",
  "kwok": "$TOOLS/kwok-$KWOK_VERSION/bin/kwok",
  "helm": "$TOOLS/helm-$HELM_VERSION/bin/helm",
  "weaviate-server": "$TOOLS/weaviate-server-$WEAVIATE_VERSION/bin/weaviate-server",
  "prometheus_operator_crds": "$TOOLS/prometheus-operator-crds-$PROM_OPERATOR_VERSION"
}
EOF
  mv "$TOOLS/paths.json.tmp" "$TOOLS/paths.json"
  log "paths written to $TOOLS/paths.json"
}

main() {
  only=${1:-all}
  case $only in
    all)
      build_kubernetes
      go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
      copy_prometheus_crds
      build_helm
      build_containerd
      build_coredns
      build_weaviate
      ;;
    kubernetes) build_kubernetes ;;
    kwok) go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ;;
    crds) copy_prometheus_crds ;;
    helm) build_helm ;;
    containerd) build_containerd ;;
    coredns) build_coredns ;;
    weaviate) build_weaviate ;;
    paths) ;;
    *) die "usage: hack/tools.sh [all|kubernetes|kwok|crds|helm|containerd|coredns|weaviate|paths]" ;;
  esac
  write_paths
}

# One line, so a build running while this file is edited never reads a half-changed script.
main "$@"; exit
