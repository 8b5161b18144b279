#!/bin/sh
# build: "compiles" a few files, reporting progress on fd 3, writes out/report-<task>.txt into
# $KBFLEET_OUT (declared as artifact `report`) and returns {"status":"ok","files":N}.
set -eu

task=${KBFLEET_TASK_ID:?KBFLEET_TASK_ID is set by the worker}
out=${KBFLEET_OUT:?KBFLEET_OUT is set by the worker}
cat >/dev/null  # the input is not used

sources="main.c parse.c eval.c print.c"
total=0
for f in $sources; do total=$((total + 1)); done

n=0
for f in $sources; do
  n=$((n + 1))
  echo "[$n/$total] CC $f -> ${f%.c}.o"
  printf '{"progress":0.%02d,"message":"compiled %s"}\n' $((n * 100 / (total + 1))) "$f" >&3
done
echo "[link] LD app"

report="$out/report-$task.txt"
{
  echo "build report"
  echo "task: $task"
  echo "files: $total"
  for f in $sources; do echo "  ok $f"; done
  echo "status: ok"
} >"$report"
echo "wrote $(basename "$report")"

printf '{"progress":1.0,"message":"linked"}\n' >&3
printf '{"result":{"status":"ok","files":%d}}\n' "$total" >&3
