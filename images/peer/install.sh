#!/bin/sh
# Installs k8scc into a Fabric peer's filesystem: a virtual environment holding the wheel, the
# builder directory the peer runs (bin/ plus k8scc.yaml) and k8scc's entry in the peer's
# core.yaml. The peer image runs it at build time; a test runs it into a temporary directory.
#
# Usage: install.sh WHEEL
# Environment (defaults are the image's layout):
#   K8SCC_PREFIX          builder directory                  (/opt/k8scc)
#   K8SCC_VENV            virtual environment                ($K8SCC_PREFIX/venv)
#   K8SCC_CONFIG          k8scc.yaml placed beside bin/      (k8scc.yaml next to this script)
#   K8SCC_FABRIC_VERSION  if set, appended as fabricVersion to the installed k8scc.yaml
#   FABRIC_CFG_PATH       directory of the core.yaml to edit (/etc/hyperledger/fabric)
#   PYTHON                interpreter for the venv           (python3)
# pip reads its own PIP_* variables (e.g. PIP_NO_CACHE_DIR, PIP_INDEX_URL).
set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: install.sh WHEEL" >&2
    exit 2
fi
wheel=$1
here=$(cd "$(dirname "$0")" && pwd)
prefix=${K8SCC_PREFIX:-/opt/k8scc}
venv=${K8SCC_VENV:-$prefix/venv}
config=${K8SCC_CONFIG:-$here/k8scc.yaml}
core=${FABRIC_CFG_PATH:-/etc/hyperledger/fabric}/core.yaml
python=${PYTHON:-python3}

# Checked before anything is written, so a bad invocation leaves nothing behind.
for file in "$wheel" "$config" "$core"; do
    if [ ! -f "$file" ]; then
        echo "install.sh: error: $file: no such file" >&2
        exit 1
    fi
done
if [ -n "${K8SCC_FABRIC_VERSION:-}" ] && grep -q '^fabricVersion:' "$config"; then
    echo "install.sh: error: $config sets fabricVersion; unset K8SCC_FABRIC_VERSION" >&2
    exit 1
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$wheel"
"$venv/bin/k8scc" install-builder "$prefix" --config "$config" >/dev/null
if [ -n "${K8SCC_FABRIC_VERSION:-}" ]; then
    printf '\nfabricVersion: "%s"\n' "$K8SCC_FABRIC_VERSION" >>"$prefix/k8scc.yaml"
fi
# A configuration k8scc would refuse fails the install, not the peer's first chaincode build.
"$venv/bin/python" - "$prefix/k8scc.yaml" <<'CHECK'
import sys
from pathlib import Path

from k8scc import config
from k8scc.errors import K8sccError

try:
    config.load(Path(sys.argv[1]))
except K8sccError as error:
    sys.exit(f"install.sh: error: {error}")
CHECK
"$venv/bin/k8scc" core-yaml --builder-dir "$prefix" --in-place "$core"
echo "k8scc installed: builder $prefix, venv $venv, $core lists it"
