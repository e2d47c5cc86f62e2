#!/usr/bin/env bash
# Installs what the targets need on a fresh machine: apt packages, uv (pinned, in a virtual
# environment of its own under the cache) and the locked Python environment. Go-built binaries
# (kube-apiserver, etcd, Fabric) are built on first use by the testbed and cached under
# ~/.cache/k8scc, keyed by version.
#   UV_VERSION  the uv release to install      UV  where its binary goes (set by the Makefile)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${UV_VERSION:?set by the Makefile}" "${UV:?set by the Makefile}"

need_apt=()
for tool in unshare setpriv mount; do
  command -v "$tool" >/dev/null || need_apt+=(util-linux mount)
done
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
# The test bed's real node: runc, the CNI plugins, iptables for the kubelet, umoci to pack
# images, mmdebstrap for the Fabric-like images, buildah for the Dockerfiles under images/ and
# a static busybox for the test images (containerd and the kubelet are Go-built).
for package in runc containernetworking-plugins umoci iptables busybox-static mmdebstrap buildah; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || need_apt+=("$package")
done
# uv is installed with the system Python's venv and pip, whatever python3 a shell has first.
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$UV" ]; then
  # Built beside its final place and renamed into it, so a run cut short leaves no half install.
  # (uv's wheel ships a native binary, which does not mind the venv's move.)
  venv=$(dirname "$(dirname "$UV")")
  echo "setup: installing uv $UV_VERSION from PyPI into $venv" >&2
  mkdir -p "$(dirname "$venv")"
  staging=$(mktemp -d "$venv.partial.XXXXXX")
  /usr/bin/python3 -m venv "$staging"
  "$staging/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  mv -T "$staging" "$venv" 2>/dev/null || rm -rf "$staging"  # another run won the race
fi
"$UV" sync --frozen --quiet
