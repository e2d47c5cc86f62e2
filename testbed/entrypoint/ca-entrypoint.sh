#!/bin/sh
# The entrypoint of the test bed's entrypoint image: like eclipse-temurin's, it must run before
# the container's own command (there it installs operators' CA certificates when
# USE_SYSTEM_CA_CERTS is set), then runs that command.
if [ -n "$USE_SYSTEM_CA_CERTS" ]; then
    echo "entrypoint: CA certificates installed before $1"
fi
exec "$@"
