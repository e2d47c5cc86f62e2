#!/bin/sh
# k8scc test bed stand-in for fabric-nodeenv's /chaincode/start.sh: the runtime
# image holds the build output in /usr/local/src; the launcher's arguments
# (--peer.address <addr>) go to the package's start script.
# K8SCC_FSROOT: see build.sh.
set -eu

cd "${K8SCC_FSROOT:-}/usr/local/src"
exec npm start -- "$@"
