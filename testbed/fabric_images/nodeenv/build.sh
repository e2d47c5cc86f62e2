#!/bin/sh
# The test bed's fabric-nodeenv build: the package's source beside its production dependencies
# in /chaincode/output. No compiler runs: TypeScript must be compiled before packaging.
set -ex
cp -R /chaincode/input/src/. /chaincode/output
cd /chaincode/output
if [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
    npm ci --omit=dev
else
    npm install --omit=dev
fi
