#!/usr/bin/env bash
# Installs the Debian packages kuberag's tests and `make run` use, when missing.
#   system-deps.sh                  all of them (tests need them: failure is an error)
#   system-deps.sh --optional PKG.. only these, and only warn when they cannot be installed
set -uo pipefail
optional=0
if [ "${1:-}" = "--optional" ]; then optional=1; shift; fi
# binary:package
wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
  wanted=(redis-server:redis-server etcd:etcd-server prometheus:prometheus promtool:prometheus wrk:wrk openssl:openssl)
  # The real node of the end-to-end suite and its images (make e2e, make image-local).
  wanted+=(runc:runc /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables umoci:umoci
           debootstrap:debootstrap gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev)
else
  wanted=("${wanted[@]/%/:}")
  for i in "${!wanted[@]}"; do w=${wanted[$i]%:}; wanted[$i]="$w:$w"; done
fi
missing=()
for pair in "${wanted[@]}"; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/usr/bin/$bin" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}" >&2
  if [ ! -f /var/lib/apt/periodic/kuberag-updated ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
    apt-get update -qq >&2 && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/kuberag-updated
  fi
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    exit 0
  fi
fi
msg="missing Debian packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})"
if [ "$optional" -eq 1 ]; then
  echo "warning: $msg" >&2
  exit 0
fi
echo "error: $msg" >&2
exit 1
