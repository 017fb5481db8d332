#!/usr/bin/env bash
# A three-node Trellis cluster in containers, each with its own address on a private
# network, from an image built FROM scratch. It checks, with bounded waits:
#   1. the nodes bootstrap (ids from the hostnames' ordinals) and serve a Standard execution;
#   2. `docker kill` of the bootstrap node: the others elect leaders and keep serving;
#      restarted, it rejoins and the cluster is healthy again;
#   3. a node cut off the network: the majority keeps serving; reconnected, it catches up;
#   4. a rolling restart (`docker restart`, one node at a time) keeps the cluster serving.
# Usage: deploy/docker/smoke.sh   (needs Docker; builds the binaries first, release unless
# PROFILE=debug, as CI does)
set -euo pipefail

cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-release}
IMAGE=${IMAGE:-trellis:smoke}
NET=trellis-smoke
NODES=(trellis-0 trellis-1 trellis-2)

say() { printf '\n== %s\n' "$*"; }
fail() {
  echo "smoke: $*" >&2
  for n in "${NODES[@]}"; do
    echo "--- $n" >&2
    docker exec "$n" /trellisctl --endpoint http://127.0.0.1:7300 cluster status >&2 2>&1 || true
    # Replication errors towards a stopped node drown everything else.
    docker logs "$n" 2>&1 | grep -v 'openraft::replication' | tail -40 >&2 || true
  done
  exit 1
}
cleanup() { docker rm -f -v "${NODES[@]}" >/dev/null 2>&1 || true; docker network rm "$NET" >/dev/null 2>&1 || true; rm -rf "$STAGE"; }
STAGE=$(mktemp -d)
trap cleanup EXIT

say "image"
# The image users run (deploy/docker/Dockerfile), from the binaries of this profile.
IMAGE=$IMAGE PROFILE=$PROFILE deploy/docker/build-image.sh

# trellisctl inside a container (the image has no shell), against that node's own gRPC port.
ctl() { local n=$1; shift; docker exec "$n" /trellisctl --endpoint http://127.0.0.1:7300 "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every half second.
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "timed out: $what"
    sleep 0.5
  done
  echo "ok: $what"
}

# Outputs are read whole before they are searched: an early-closing reader would kill the
# writer with SIGPIPE, which pipefail turns into a failure.
healthy() {
  local s
  s=$(ctl "$1" cluster status) && grep -q '^health HEALTHY ' <<<"$s" && grep -q 'leaderless: none' <<<"$s"
}
serves() {
  local s
  s=$(ctl "$1" exec start arn:aws:states:us-east-1:000000000000:stateMachine:hello --input '{}' --wait) &&
    grep -q '^SUCCEEDED' <<<"$s"
}
leaders_on() {
  # every shard's leader is one of the given node ids
  local view=$1; shift
  local s
  s=$(ctl "$view" shards list --json) || return 1
  python3 -c '
import json, sys
ok = set(int(a) for a in sys.argv[1:])
shards = json.load(sys.stdin)
shards = shards.get("shards", shards) if isinstance(shards, dict) else shards
sys.exit(0 if shards and all(s.get("leader") in ok for s in shards) else 1)' "$@" <<<"$s"
}

start() {
  local n=$1
  # /data on a volume, as on Kubernetes (a PersistentVolume), not on the container's
  # overlay file system, where fsyncs can be very slow.
  docker run -d --name "$n" --hostname "$n" --network "$NET" --network-alias "$n.trellis" \
    --volume /data "$IMAGE" server --id-from-hostname --data-dir /data --shards 16 \
    --grpc-addr 0.0.0.0:7300 --http-addr 0.0.0.0:8083 --peer-addr 0.0.0.0:7301 \
    --advertise-addr "$n.trellis:7301" --join trellis-0.trellis:7301 --bootstrap-expect 3 \
    --insecure >/dev/null
}

say "three nodes"
docker rm -f -v "${NODES[@]}" >/dev/null 2>&1 || true
docker network rm "$NET" >/dev/null 2>&1 || true
docker network create "$NET" >/dev/null
for n in "${NODES[@]}"; do start "$n"; done
wait_for 60 "the cluster is healthy" healthy trellis-1
printf '{"StartAt":"Hi","States":{"Hi":{"Type":"Pass","Result":{"hello":"cluster"},"End":true}}}' > "$STAGE/hello.json"
docker cp "$STAGE/hello.json" trellis-2:/hello.json
ctl trellis-2 sm create hello --definition /hello.json >/dev/null
wait_for 30 "an execution through trellis-0" serves trellis-0
ctl trellis-1 cluster status

say "kill the bootstrap node"
docker kill trellis-0 >/dev/null
wait_for 30 "leaders on nodes 2 and 3" leaders_on trellis-1 2 3
wait_for 30 "an execution through trellis-2" serves trellis-2
docker start trellis-0 >/dev/null
wait_for 60 "healthy after the restart" healthy trellis-0
wait_for 30 "an execution through the restarted node" serves trellis-0

say "cut trellis-2 off the network"
docker network disconnect "$NET" trellis-2
wait_for 30 "leaders on nodes 1 and 2" leaders_on trellis-0 1 2
wait_for 30 "an execution through trellis-1" serves trellis-1
docker network connect --alias trellis-2.trellis "$NET" trellis-2
wait_for 60 "healthy after reconnecting" healthy trellis-2
ctl trellis-2 shards list

say "rolling restart"
for n in "${NODES[@]}"; do
  docker restart -t 10 "$n" >/dev/null
  wait_for 60 "healthy after restarting $n" healthy "$n"
  wait_for 30 "an execution through $n" serves "$n"
done
ctl trellis-0 cluster status
say "passed"
