#!/usr/bin/env bash
# Installs what the targets need on a fresh machine: uv and the locked Python environment.
# Go-built binaries (kube-apiserver, etcd, Fabric) are built on first use by the testbed
# and cached under ~/.cache/k8scc, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in unshare setpriv mount; do
  command -v "$tool" >/dev/null || need_apt+=(util-linux mount)
done
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null && [ ! -x "$HOME/.local/bin/uv" ]; then
  echo "setup: installing uv from PyPI" >&2
  python3 -m pip install --quiet --user uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")
"$UV" sync --frozen --quiet
