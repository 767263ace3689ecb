#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh DIR started (by their pid files), and nothing else.
dir=${1:?usage: stop.sh DIR}
[ -f "$dir/pids" ] || exit 0
while read -r name pidfile; do
  pid=$(cat "$pidfile" 2> /dev/null) || continue
  kill "$pid" 2> /dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2> /dev/null || true
done < <(tac "$dir/pids")
