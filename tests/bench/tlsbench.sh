#!/usr/bin/env bash
# Plaintext vs TLS + bearer-token authentication on gRPC: `trellisctl bench` against a
# `trellis dev` node started fresh for each run, alternating, on this machine. Rate limits
# are lifted for the authenticated runs (the default StartExecution bucket, 1,300 then
# 300/s, throttles a flood, as it should). Needs the release binaries:
#   cargo build --release --bin trellis --bin trellisctl && bash tests/bench/tlsbench.sh
# Uses ports 7300/7301/8083 and /tmp/tlsbench.
set -u
B="$(cd "$(dirname "$0")/../.." && pwd)/target/release"
W=/tmp/tlsbench; rm -rf $W; mkdir -p $W
$B/trellisctl certs ca --dir $W/pki >/dev/null
$B/trellisctl certs node node --san 127.0.0.1 --dir $W/pki >/dev/null
run() { # mode label args...
  local mode=$1; shift
  rm -rf $W/data
  if [ "$mode" = tls ]; then
    TRELLIS_ROOT_ACCESS_KEY_ID=AKB TRELLIS_ROOT_SECRET_ACCESS_KEY=bench-secret TRELLIS_ROOT_TOKEN=bench-token-0123456789 \
    TRELLIS__AUTH__RATE__START_BURST=100000000 TRELLIS__AUTH__RATE__START_PER_SECOND=100000000 TRELLIS__AUTH__RATE__OTHER_BURST=100000000 TRELLIS__AUTH__RATE__OTHER_PER_SECOND=100000000 \
    TRELLIS__TLS__CERT_FILE=$W/pki/node.pem TRELLIS__TLS__KEY_FILE=$W/pki/node-key.pem \
      $B/trellis dev --data-dir $W/data > $W/node.log 2>&1 &
    EP=(--endpoint https://127.0.0.1:7300 --ca $W/pki/ca.pem --token bench-token-0123456789)
  else
    $B/trellis dev --data-dir $W/data > $W/node.log 2>&1 &
    EP=(--endpoint http://127.0.0.1:7300)
  fi
  local pid=$!
  for i in $(seq 1 100); do grep -q "serving the AWS" $W/node.log && break; sleep 0.1; done
  echo "== $mode $*"
  $B/trellisctl "${EP[@]}" bench "$@" 2>&1 | tail -4
  kill $pid; wait $pid 2>/dev/null
}
for r in 1 2 3; do
  run plain --executions 10000 --concurrency 64
  run tls --executions 10000 --concurrency 64
done
run plain --express --executions 10000 --concurrency 16 --rate 1000
run tls --express --executions 10000 --concurrency 16 --rate 1000
