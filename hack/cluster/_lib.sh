# shellcheck shell=bash
# Shared by hack/cluster/{up,down,ci-prepare}. Sourced, not executed.
HACK_CLUSTER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_CLUSTER/../.." && pwd)"
export MODELSHIP_CACHE="${MODELSHIP_CACHE:-/var/cache/modelship}"

# modelship_dev.cluster is stdlib-only: any python3 >= 3.11 works. Prefer the project venv.
pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  if [[ -x "$MODELSHIP_CACHE/venv/bin/python" ]]; then echo "$MODELSHIP_CACHE/venv/bin/python"; return; fi
  command -v python3
}

devcluster() {
  PYTHONPATH="$REPO_ROOT:$REPO_ROOT/operator${PYTHONPATH:+:$PYTHONPATH}" "$(pick_python)" -m modelship_dev.cluster "$@"
}
