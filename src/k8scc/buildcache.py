"""Build caches: one PersistentVolumeClaim that builder pods mount, so a chaincode's next build
finds the modules, packages and compiled objects of its last one.

Builds run untrusted code (npm install scripts, Maven plugins), so a builder sees only its own
scope of the claim, mounted by subPath: `<platform>-<user>/<scope>`. By default a scope is one
chaincode across its versions (the package label without its trailing `_<version>`), shared by
every peer that mounts the claim; `scope: platform` shares one scope between all chaincode of a
platform, an operator's explicit choice to trust them with each other's downloads. An init
container, which runs k8scc's script and no chaincode code, sees the platform's whole directory:
it creates the scope, marks it used and prunes the least recently used scopes over the bound.
"""

from __future__ import annotations

import re

from k8scc import names

# Where the init container sees the whole claim.
CLAIM_DIR = "/k8scc-cache"
SCOPES = ("chaincode", "platform")
_VERSION_SUFFIX = re.compile(r"_[vV]?[0-9][0-9A-Za-z.+-]*$")
_SIZE = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_UNITS = {
    None: 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def chaincode_of(label: str) -> str:
    """What stays the same across versions of one chaincode: Fabric's packaging convention
    labels a package `<name>_<version>` (`basic_1.0`, `mycc_v2`), so the label without such a
    suffix; a label without one is its own chaincode."""
    return _VERSION_SUFFIX.sub("", label) or label


def platform_dir(platform: str, uid: int | None) -> str:
    """One directory per platform and user: scopes in it belong to the user that prunes them."""
    return f"{platform}-{'image' if uid is None else uid}"


def scope_dir(label: str, scope: str) -> str:
    """A DNS-safe name for the scope, readable and unique by a hash of the exact chaincode."""
    if scope == "platform":
        return "shared"
    chaincode = chaincode_of(label)
    readable = names.slug(chaincode, 40)
    hashed = names.digest("cache", chaincode)
    return f"{readable}-{hashed}" if readable else hashed


def parse_size(text: str) -> int | None:
    """Bytes in a Kubernetes-style size (`4Gi`, `500M`, `1048576`), or None if it is not one."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


# Arguments: the platform's directory below CLAIM_DIR, the scope, the bound in KiB, and how many
# seconds a scope stays in use after it was last marked (a build cannot outlast its timeout).
# Under a lock when the image has flock, so concurrent builders prune one at a time. A scope
# marked in the future is not trusted to be in use: a build may set its own scope's time.
PREPARE_SCRIPT = f"""set -eu
base={CLAIM_DIR}/$1 scope=$2 limit=$3 keep=$4
mkdir -p "$base"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$base/.lock"
  flock 9
fi
mkdir -p "$base/$scope"
touch "$base/$scope"
now=$(date +%s)
total=$(du -sk "$base" | cut -f1)
for old in $(ls -1tr "$base"); do
  [ "$total" -gt "$limit" ] || break
  [ "$old" != "$scope" ] || continue
  age=$((now - $(stat -c %Y "$base/$old")))
  if [ "$age" -ge 0 ] && [ "$age" -lt "$keep" ]; then continue; fi
  size=$(du -sk "$base/$old" | cut -f1)
  chmod -R u+w "$base/$old" 2>/dev/null || true
  if rm -rf "$base/$old"; then
    total=$((total - size))
    echo "k8scc-cache: pruned $old ($size KiB), $total KiB left of $limit"
  fi
done
"""
