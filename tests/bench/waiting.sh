#!/bin/bash
# Memory and restart time of waiting executions (docs/benchmarks.md): starts N executions of
# `trellisctl bench`'s machine held in a Wait of a day on a fresh `trellis dev`, prints the
# node's RSS before and after, `du` of the data directory, then restarts the node and
# prints the time to `/healthz` and to `/readyz`, and the RSS after the restart.
#
#   BIN=target/release N=100000 CACHE_MIB=256 bash tests/bench/waiting.sh
set -u
BIN=$(realpath "${BIN:-target/release}")
N=${N:-100000}
CACHE_MIB=${CACHE_MIB:-256}
WORK=$(mktemp -d)
DATA=$WORK/data
HTTP=127.0.0.1:28183 GRPC=127.0.0.1:27400 PEER=127.0.0.1:27401
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$NODE/status"; }
metric() { curl -s "http://$HTTP/metrics" | awk -v m="$1" '$1==m {print int($2)}'; }
start() {
  TRELLIS__NODE__CACHE_MIB=$CACHE_MIB TRELLIS_LOG=${1:-info,openraft=error,sled=warn} \
    "$BIN/trellis" dev --data-dir "$DATA" --http-addr $HTTP --grpc-addr $GRPC --peer-addr $PEER \
    >> "$WORK/node.log" 2>&1 &
  NODE=$!
  S=$(date +%s%N)
  for _ in $(seq 1 1200); do curl -sf "http://$HTTP/healthz" > /dev/null && break; sleep 0.05; done
  HEALTHY=$(( ($(date +%s%N) - S) / 1000000 ))
  for _ in $(seq 1 2400); do curl -sf "http://$HTTP/readyz" > /dev/null && break; sleep 0.05; done
  READY=$(( ($(date +%s%N) - S) / 1000000 ))
}
start
sleep 2
R0=$(rss)
echo "idle node: RSS $R0 bytes"
"$BIN/trellisctl" --endpoint "http://$GRPC" bench --executions "$N" --concurrency 64 --wait-seconds 86400 2>&1 | grep "executions/s"
sleep 2
R1=$(rss)
echo "after $N waiting: RSS $R1 bytes ($(( (R1 - R0) / N )) per execution), parked $(metric trellis_executions_parked), running $(metric trellis_executions_running)"
echo "disk: $(du -sb "$DATA" | cut -f1) bytes"
kill $NODE; wait $NODE
: > "$WORK/node.log"
start info,openraft=error,sled=warn,trellis_storage::db=debug,trellis_shard::executor=debug
sleep 1
echo "restart: /healthz after $HEALTHY ms, /readyz after $READY ms; RSS $(rss) bytes, parked $(metric trellis_executions_parked)"
# Where the restart went: opening the store, then each shard's executor loading.
grep -o 'store opened.*' "$WORK/node.log" | sed 's/\x1b\[[0-9;]*m//g'
grep 'executor loaded' "$WORK/node.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'elapsed_ms=[0-9]*' |
  sort -t= -k2 -n | tail -1 | sed 's/^/slowest executor load: /'
kill $NODE; wait $NODE
rm -rf "$WORK"
