#!/usr/bin/env bash
# Installs dependencies, builds kbfleet, starts a broker and two workers on loopback and runs the
# example plugins through them: live output, an artifact fetched back with its sha256, and a line
# of metrics. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build kbfleet kbfleet-broker kbfleet-worker

run=$(mktemp -d /var/tmp/kbfleet-demo.XXXXXX)  # not /tmp: see docs/sandbox.md
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

# Port * / 0: the broker binds free ports and prints them as key=value lines.
build/bin/kbfleet-broker --bind 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' --metrics 127.0.0.1:0 \
  --data "$run/data" >"$run/broker.out" 2>"$run/broker.log" &
pids+=($!)
until grep -q '^metrics=' "$run/broker.out" 2>/dev/null; do
  kill -0 "${pids[0]}" || { cat "$run/broker.log"; exit 1; }
  sleep 0.05
done
export KBFLEET_BROKER=$(sed -n 's/^bind=//p' "$run/broker.out")
metrics=$(sed -n 's/^metrics=//p' "$run/broker.out")
echo "broker: $KBFLEET_BROKER  metrics: http://$metrics/metrics"

for i in 1 2; do
  build/bin/kbfleet-worker --broker "$KBFLEET_BROKER" --plugins examples/plugins --slots 2 \
    --work "$run/work-$i" --metrics 127.0.0.1:0 --worker-id "demo-$i" >/dev/null 2>"$run/worker-$i.log" &
  pids+=($!)
done
until [ "$(build/bin/kbfleet workers | tail -n +2 | wc -l)" -ge 2 ]; do sleep 0.05; done
build/bin/kbfleet workers

echo; echo '$ kbfleet run hello greet --input '"'"'{"name":"demo"}'"'"
build/bin/kbfleet run hello greet --input '{"name":"demo"}'

echo; echo '$ kbfleet submit build build'
id=$(build/bin/kbfleet submit build build)
echo "$id"
echo "\$ kbfleet tail $id"
build/bin/kbfleet tail "$id"
echo "\$ kbfleet status $id"
build/bin/kbfleet status "$id"
echo "\$ kbfleet artifacts ls $id"
build/bin/kbfleet artifacts ls "$id"
echo "\$ kbfleet artifacts get $id report -o $run/report.txt"
build/bin/kbfleet artifacts get "$id" report -o "$run/report.txt"
sha256sum "$run/report.txt"

echo; echo "\$ curl -s http://$metrics/metrics | grep tasks_finished_total"
curl -s "http://$metrics/metrics" | grep '^kbfleet_broker_tasks_finished_total'
