"""What runs inside the pods in transfer mode api (apitransfer.py says how files move): the
directory of the pod's emptyDir and the shell scripts the containers and the exec streams run.
Apart from apitransfer.py so that rendering a pod does not load what packs and unpacks trees."""

from __future__ import annotations

POD_DIR = "/k8scc"
RECEIVED = f"{POD_DIR}/.received"
INPUT = "input"
OUTPUT = "output"

# What the build and chaincode containers run first: waits (first argument: seconds) for the
# exec below to have unpacked the files. Every 20 ms: a pod starts this long after its files
# at most, and the loop lasts only until then. As a container's first process the shell gets
# no signal it does not catch, so it traps SIGTERM from its first line: a pod deleted before
# its files arrive, or as its command starts, ends at once instead of after its grace period.
_WAIT = f"""stop=
trap 'stop=1' TERM
i=0
while [ -z "$stop" ] && [ ! -e {RECEIVED} ]; do
  i=$((i + 1))
  if [ "$i" -gt $(($1 * 50)) ]; then
    echo "k8scc: no files arrived within $1 s" >&2
    exit 1
  fi
  sleep 0.02
done
[ -z "$stop" ] || exit 143
shift
"""
# The chaincode container then becomes its command.
WAIT_THEN_EXEC = _WAIT + 'exec "$@"\n'
# The last line a build container prints, on stdout and on stderr, with its command's exit
# code: the step reads it in the log stream and takes the output at once, where the
# container's own end reaches the API only at the kubelet's next relist of container states,
# up to a second later. Each stream's lines arrive in order, so once both have said it the
# log is complete, and the step need not wait for the kubelet to end the stream (it checks
# for that once a second).
BUILT = "k8scc-build-exit"
# The build container runs its command as a child, so that it can say how it ended, and
# passes SIGTERM on to it: exactly once, whether the signal comes before the shell knows the
# child's process id (the trap then only notes it) or after. After a build that worked, and
# was not told to stop, it stays, holding the pod (and its emptyDir) until the output is
# taken and the pod deleted, which then ends it at once: a container of its own for that
# would make every pod start one container more.
WAIT_THEN_BUILD = (
    _WAIT
    + f"""child=
told=
trap 'told=1; if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; else stop=1; fi' TERM
"$@" &
child=$!
[ -z "$stop" ] || kill -TERM "$child" 2>/dev/null
while wait "$child"; code=$?; kill -0 "$child" 2>/dev/null; do :; done
echo "{BUILT} $code"
echo "{BUILT} $code" >&2
[ "$code" -eq 0 ] || exit "$code"
trap 'kill "$!" 2>/dev/null; exit 0' TERM
[ -z "$told" ] || exit 0
while :; do sleep 3600 & wait $!; done
"""
)
# Arguments: sha256 and size of the tar on stdin. Exactly that many bytes are kept, so the
# command ends without waiting for the end of stdin (which v4 streams cannot send).
RECEIVE_SCRIPT = f"""set -e
head -c "$2" > {POD_DIR}/.input.tar
set -- "$1" "$2" $(sha256sum {POD_DIR}/.input.tar)
if [ "$3" != "$1" ]; then
  size=$(($(wc -c < {POD_DIR}/.input.tar)))
  echo "k8scc: the files arrived damaged: $size bytes of sha256 $3, sent $2 of $1" >&2
  exit 3
fi
mkdir -p {POD_DIR}/{INPUT} {POD_DIR}/{OUTPUT}
tar -xf {POD_DIR}/.input.tar -C {POD_DIR}/{INPUT}
rm {POD_DIR}/.input.tar
touch {RECEIVED}"""
# Argument: the most bytes the peer takes. Prints "k8scc-sha256 <digest> <size>" on stderr,
# then the tar on stdout.
SEND_SCRIPT = f"""set -e
tar -cf {POD_DIR}/.output.tar -C {POD_DIR}/{OUTPUT} .
size=$(($(wc -c < {POD_DIR}/.output.tar)))
if [ "$size" -gt "$1" ]; then
  echo "k8scc: the build output is $size bytes, more than transfer.maxSize ($1 bytes)" >&2
  exit 4
fi
set -- $(sha256sum {POD_DIR}/.output.tar)
echo "k8scc-sha256 $1 $size" >&2
cat {POD_DIR}/.output.tar"""
