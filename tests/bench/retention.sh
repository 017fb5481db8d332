#!/bin/bash
# Retention and disk space (docs/benchmarks.md): runs N executions of `trellisctl bench`'s
# 10-state machine on a fresh `trellis dev` with a short retention, waits until retention
# deleted them all, and prints `du` at each step; then stops the node, times a restart, and
# compacts the directory with `trellis compact`.
#
#   BIN=target/release N=50000 RETENTION=60s SNAPSHOT_LOGS=5000 bash tests/bench/retention.sh
set -u
BIN=$(realpath "${BIN:-target/release}")
N=${N:-50000}
RETENTION=${RETENTION:-60s}
SNAPSHOT_LOGS=${SNAPSHOT_LOGS:-5000}
WORK=$(mktemp -d)
DATA=$WORK/data
HTTP=127.0.0.1:28083 GRPC=127.0.0.1:27300 PEER=127.0.0.1:27301
bytes() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }
metric() { curl -s "http://$HTTP/metrics" | awk -v m="$1" '$1==m {print int($2)}'; }
start() {
  TRELLIS__CLUSTER__RETENTION=$RETENTION TRELLIS__CLUSTER__SNAPSHOT_LOGS=$SNAPSHOT_LOGS \
    "$BIN/trellis" dev --data-dir "$DATA" --http-addr $HTTP --grpc-addr $GRPC --peer-addr $PEER \
    >> "$WORK/node.log" 2>&1 &
  NODE=$!
  for _ in $(seq 1 600); do curl -sf "http://$HTTP/healthz" > /dev/null && return; sleep 0.1; done
  echo "the node did not start; see $WORK/node.log"; kill $NODE; exit 1
}
start
T0=$(date +%s)
"$BIN/trellisctl" --endpoint "http://$GRPC" bench --executions "$N" --concurrency 64 --cleanup 2>&1 | grep "executions/s"
echo "after $N executions: $(bytes "$DATA") bytes ($(( $(bytes "$DATA") / N )) per execution)"
for _ in $(seq 1 1800); do
  [ "$(metric trellis_executions_expired_total)" -ge "$N" ] 2>/dev/null && break
  sleep 1
done
echo "deleted $(metric trellis_executions_expired_total) by $(( $(date +%s) - T0 )) s after the start: $(bytes "$DATA") bytes"
kill $NODE; wait $NODE
S=$(date +%s%N)
start
echo "restart to healthy: $(( ($(date +%s%N) - S) / 1000000 )) ms"
kill $NODE; wait $NODE
"$BIN/trellis" compact --data-dir "$DATA" --into "$WORK/compacted"
echo "compacted: raft-snapshots $(bytes "$WORK/compacted/raft-snapshots") bytes, the rest sled"
rm -rf "$WORK"
