#!/usr/bin/env bash
# Set up a virtual environment with the project, start Scrapyd with the shipped
# scrapyd.conf, deploy the project to it with scrapyd-deploy, schedule a batch
# job over a small sample site served on localhost, show its live progress and
# print its final status.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[deploy]'
scrapy=(.venv/bin/python -m scrapy)

workdir=$(mktemp -d)
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$workdir"' EXIT

# The sample site.
.venv/bin/python -m tests.site > "$workdir/site.out" &
pids+=($!)
until [ -s "$workdir/site.out" ]; do sleep 0.1; done
site=$(head -n 1 "$workdir/site.out")

# Scrapyd, in a directory of its own with the shipped config, on a free port.
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
mkdir "$workdir/scrapyd"
cp scrapyd.conf "$workdir/scrapyd/"
(cd "$workdir/scrapyd" && SCRAPYD_HTTP_PORT=$port exec "$repo/.venv/bin/scrapyd" > scrapyd.log 2>&1) &
pids+=($!)
until curl -sf "$url/daemonstatus.json" > /dev/null; do sleep 0.2; done
echo "Scrapyd: $url"

# Deploy: scrapyd-deploy builds the egg (spiders and extension) and uploads it.
# The target's URL goes in a config file of this run only.
printf '[deploy:demo]\nurl = %s/\nproject = crawler\n' "$url" > "$workdir/scrapy.cfg"
if ! XDG_CONFIG_HOME="$workdir" .venv/bin/scrapyd-deploy demo > "$workdir/deploy.out" 2>&1; then
  cat "$workdir/deploy.out"; exit 1
fi
echo "Deployed: $(grep '"status"' "$workdir/deploy.out")"

pages=""
for page in "" apple banana cherry damson elderberry fig grape kiwi; do
  pages+="${pages:+,}$site/sample/$page?delay=0.4"
done
job="demo-$(date +%Y%m%d-%H%M%S)"
echo "Batch job $job: $(tr ',' '\n' <<< "$pages" | wc -l) pages of $site/sample/"
curl -sf "$url/schedule.json" -d project=crawler -d spider=batch -d jobid="$job" \
  -d urls="$pages" -d setting=CONCURRENT_REQUESTS=2
echo

"${scrapy[@]}" jobwatch "$job" --url "$url" --wait 30 || true
echo
"${scrapy[@]}" jobstatus "$job" --url "$url"
echo
echo "Errors ($url/joberrors.json?job=$job&format=csv):"
curl -sf "$url/joberrors.json?job=$job&format=csv"
