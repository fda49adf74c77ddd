#!/usr/bin/env bash
# Set up a virtual environment with the project, serve a small sample site on
# localhost, run a batch job over it with live progress, and print the job's
# final status.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
scrapy=(.venv/bin/python -m scrapy)

workdir=$(mktemp -d)
site_log="$workdir/site.out"
.venv/bin/python -m tests.site > "$site_log" &
site_pid=$!
trap 'kill $site_pid 2>/dev/null || true; rm -rf "$workdir"' EXIT
until [ -s "$site_log" ]; do sleep 0.1; done
site=$(head -n 1 "$site_log")

pages=""
for page in "" apple banana cherry damson elderberry fig grape kiwi; do
  pages+="${pages:+,}$site/sample/$page?delay=0.4"
done
job="demo-$(date +%Y%m%d-%H%M%S)"
db="$workdir/jobstatus.db"

echo "Batch job $job: $(tr ',' '\n' <<< "$pages" | wc -l) pages of $site/sample/"
"${scrapy[@]}" crawl batch -a urls="$pages" -a _job="$job" \
  -s JOBSTATUS_DB="$db" -s CONCURRENT_REQUESTS=2 -O "$workdir/items.jl" --logfile "$workdir/crawl.log" &
crawl_pid=$!

"${scrapy[@]}" jobwatch "$job" --db "$db" --wait 30 || true
wait $crawl_pid || true
echo
"${scrapy[@]}" jobstatus "$job" --db "$db"
echo
echo "Items ($(wc -l < "$workdir/items.jl")):"
cat "$workdir/items.jl"
