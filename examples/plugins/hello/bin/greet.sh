#!/bin/sh
# greet: echoes its JSON input, prints numbered lines (and one on stderr), reports progress on
# fd 3 and returns {"greeting":"hello, <name>"}. Input: {"name":"..."} (default "world").
set -eu

input=$(tr -d '\n')
# Only quote-, backslash- and control-free names are taken, so the result below stays valid JSON.
name=$(printf '%s' "$input" | sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"\\[:cntrl:]]*\)".*/\1/p')
[ -n "$name" ] || name=world
loud=no
for arg in "$@"; do
  case $arg in --loud) loud=yes ;; esac
done

echo "input: $input"
printf '{"progress":0.25,"message":"read input"}\n' >&3
i=1
while [ "$i" -le 3 ]; do
  echo "$i: hello, $name"
  printf '{"progress":0.%d,"message":"line %d"}\n' $((25 + i * 20)) "$i" >&3
  i=$((i + 1))
done
echo "loud=$loud (this line goes to stderr)" >&2
printf '{"progress":1.0,"message":"done"}\n' >&3
printf '{"result":{"greeting":"hello, %s"}}\n' "$name" >&3
