#!/usr/bin/env bash
# Two sites and one central VerTac on one machine, each a whole VerTac with its own nats-server
# and PostgreSQL; each site runs a simulated machine. The dashboards:
#   central http://localhost:8000   north http://localhost:8001   south http://localhost:8002
# On real plants each `vertac run --site` runs on its own machine and --central names central's
# address (with tls:// through the wide-area link). Ctrl-C stops all three.
#
#   deploy/federation/two-sites.sh [data-dir]     (default: .vertac-federation)
set -euo pipefail
DIR=${1:-.vertac-federation}
VERTAC=${VERTAC:-vertac}
mkdir -p "$DIR"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM

# central: takes north's and south's leaf nodes on 7422, makes each site's password
$VERTAC central --site north --site south --data-dir "$DIR/central" --port 8000 \
  --nats-port 4222 --nats-monitor-port 8222 --leaf-port 7422 --pg-port 55432 \
  --metrics-base-port 9101 &
pids+=($!)
secrets="$DIR/central/leaf.secrets"
for _ in $(seq 600); do [ -s "$secrets" ] && break; sleep 0.1; done
[ -s "$secrets" ] || { echo "central did not start: no $secrets" >&2; exit 1; }

port=8001
for site in north south; do
  # the site signs in to central's leaf port with its own password
  url=$(python3 -c 'import json, sys; p = json.load(open(sys.argv[1]))["site-" + sys.argv[2]]
print(f"nats-leaf://site-{sys.argv[2]}:{p}@127.0.0.1:7422")' "$secrets" "$site")
  n=$((port - 8000))
  $VERTAC run --site "$site" --central "$url" --data-dir "$DIR/$site" --port "$port" \
    --nats-port $((4222 + n)) --nats-monitor-port $((8222 + n)) --pg-port $((55432 + n)) \
    --metrics-base-port $((9101 + 10 * n)) &
  pids+=($!)
  port=$((port + 1))
done
wait -n "${pids[@]}"
