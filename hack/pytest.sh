#!/usr/bin/env bash
# Runs pytest; "no tests collected" (exit 5) is a failure here, never a silent pass.
set -uo pipefail
py=$1; shift
"$py" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
