#!/usr/bin/env bash
# Three Scrapyd nodes on one PostgreSQL store, on this machine: start a
# throwaway PostgreSQL server, three nodes with the shipped scrapyd.conf (each
# its own port, directory and node_name), deploy the project to node 1 only,
# schedule jobs on node 1, and show where they ran: one queue, one job view.
#
# Needs PostgreSQL's server programs (Debian: apt-get install postgresql); as
# root, the script installs them. Ctrl-C or the end stops and removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
jobs=${JOBS:-12}

if ! command -v initdb > /dev/null && ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq && apt-get install -y -qq postgresql > /dev/null
  else
    echo "PostgreSQL's server is not installed: apt-get install postgresql" >&2; exit 1
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[deploy,postgres]'

workdir=$(mktemp -d)
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$workdir"' EXIT

# A throwaway PostgreSQL server (as root, it runs as the postgres user).
.venv/bin/python - > "$workdir/pg.out" <<'PY' &
import signal, sys
from tests.postgres import postgres_server
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with postgres_server() as server:
    print(server.url(), flush=True)
    signal.pause()
PY
pids+=($!)
until [ -s "$workdir/pg.out" ]; do sleep 0.2; done
db=$(head -n 1 "$workdir/pg.out")
echo "PostgreSQL: $db"

# The sample site.
.venv/bin/python -m tests.site > "$workdir/site.out" &
pids+=($!)
until [ -s "$workdir/site.out" ]; do sleep 0.1; done
site=$(head -n 1 "$workdir/site.out")

# Three nodes: the shipped scrapyd.conf with a name, a port and the store.
urls=()
for n in 1 2 3; do
  dir="$workdir/node$n"
  mkdir "$dir"
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  .venv/bin/python - "$dir/scrapyd.conf" "node$n" "$port" "$db" <<'PY'
import configparser, sys
path, name, port, db = sys.argv[1:]
cfg = configparser.ConfigParser()
cfg.read("scrapyd.conf")
cfg["scrapyd"].update(node_name=name, http_port=port, max_proc="2", poll_interval="1")
cfg["jobstatus"]["db"] = db
with open(path, "w") as f:
    cfg.write(f)
PY
  (cd "$dir" && exec "$repo/.venv/bin/scrapyd" > scrapyd.log 2>&1) &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
done
for url in "${urls[@]}"; do
  until curl -sf "$url/daemonstatus.json" > /dev/null; do sleep 0.2; done
  echo "Node: $url (dashboard: $url/dashboard)"
done

# Deploy to node 1 only: the egg goes into the shared store.
printf '[deploy:node1]\nurl = %s/\nproject = crawler\n' "${urls[0]}" > "$workdir/scrapy.cfg"
if ! XDG_CONFIG_HOME="$workdir" .venv/bin/scrapyd-deploy node1 > "$workdir/deploy.out" 2>&1; then
  cat "$workdir/deploy.out"; exit 1
fi
echo "Deployed to node 1: $(grep '"status"' "$workdir/deploy.out")"

# Schedule every job on node 1; the three nodes share the queue.
ids=()
for i in $(seq 1 "$jobs"); do
  job="cluster-$i"
  curl -sf "${urls[0]}/schedule.json" -d project=crawler -d spider=batch -d jobid="$job" \
    -d urls="$site/slow?delay=1&n=$i,$site/slow?delay=1&n=$i-b" > /dev/null
  ids+=("$job")
done
echo "Scheduled $jobs jobs on node 1; waiting for them to end..."
for job in "${ids[@]}"; do
  .venv/bin/python -m scrapy jobwatch "$job" --url "${urls[2]}" --wait 120 > /dev/null || true
done

# One job view: node 3 lists every job, with the node that ran it.
curl -sf "${urls[2]}/jobs.json?limit=100" | .venv/bin/python -c '
import collections, json, sys
jobs = json.load(sys.stdin)["jobs"]
for job in sorted(jobs, key=lambda j: j["job_id"]):
    print("  {job_id:<12} {status:<10} on {node}".format(**job))
print("Jobs per node:", dict(sorted(collections.Counter(j["node"] for j in jobs).items())))
'
echo "Nodes (nodes.json of node 2):"
curl -sf "${urls[1]}/nodes.json" | .venv/bin/python -c '
import json, sys
for node in json.load(sys.stdin)["nodes"]:
    print("  {name} {url} running {running}/{max_proc}, last seen {last_seen}".format(**node))
'
