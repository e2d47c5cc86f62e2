#!/bin/sh
# The test bed's fabric-nodeenv start: the package's own start script, from where the peer's
# launcher puts the build output, with the launcher's arguments.
set -ex
cd /usr/local/src
npm start -- "$@"
