#!/bin/sh
# The bench's host-native stand-in for fabric-nodeenv's /chaincode/build.sh: copies the
# package sources to /chaincode/output and installs production dependencies.
# K8SCC_FSROOT prefixes every absolute path so host tests can run this script
# against a scratch tree.
set -eu

root=${K8SCC_FSROOT:-}
output=$root/chaincode/output

cp -R "$root/chaincode/input/src/." "$output"
cd "$output"
if [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
    npm ci --omit=dev
else
    npm install --omit=dev
fi
