#!/usr/bin/env bash
# Set up a virtual environment with the project and its test tools, lint, then
# run the whole test suite against the newest Scrapy and, at the same time,
# the crawl-side tests against the lowest Scrapy pyproject.toml allows, from
# the project's wheel, in a virtual environment of their own. Both runs'
# summaries are printed; either failing fails the command. Extra arguments go
# to the whole suite's pytest (-n 0: one process, no parallel workers).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]' 'ruff==0.17.6'

# System packages the tests use: the Debian Policy Manual is the documents
# job's real-world corpus; the dashboard's browser tests drive the system's
# Chromium (Playwright's own browser download is not used) and its scripts'
# unit tests run under Node.js's own test runner (node --test); the store's tests
# start a throwaway PostgreSQL server of their own (its service is not used).
missing=()
dpkg -s debian-policy >/dev/null 2>&1 || missing+=(debian-policy)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing system packages: ${missing[*]} (sudo apt-get install ${missing[*]}); their tests are skipped or fail"
    fi
fi

# Lint first: a finding fails the run before the long tests start.
.venv/bin/ruff check .
.venv/bin/ruff format --check .

# The crawl side: the job lifecycle, cancel, signals, timeouts, pause,
# faults, the stall watchdog, webhooks sent by a crawl, the spiders, the
# add-on and its defaults, and Scrapy's own commands (but bench, whose
# server port is fixed: the whole suite runs it).
CRAWL_TESTS=(
    tests/test_crawl_lifecycle.py
    tests/test_crawl_pause.py
    tests/test_faults.py
    tests/test_extension.py
    tests/test_stall.py
    tests/test_stats.py
    tests/test_webhooks.py
    tests/test_documents.py
    tests/test_listings.py
    tests/test_scrapy_own_commands.py
    tests/test_addon.py
    tests/test_reactor_modes.py
    tests/test_signals.py
    --deselect tests/test_scrapy_own_commands.py::test_scrapy_bench_is_a_job_that_ends_completed
)
lowest=$(.venv/bin/python - <<'PY'
import tomllib
from packaging.requirements import Requirement

with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
(scrapy,) = [r for r in map(Requirement, dependencies) if r.name.lower() == "scrapy"]
(bound,) = [s.version for s in scrapy.specifier if s.operator == ">="]
print(bound)
PY
)
# Both runs are parallel (pytest-xdist). Their tests mostly wait on other
# processes (crawls, Scrapyd nodes, PostgreSQL, the browser), so more workers
# than cores pay. --dist loadfile: a module's tests run in one worker, in
# order, so a fixture of the module's scope (a node, a browser) is made once;
# the modules with the most tests start first.
WORKERS=6
LOWEST_WORKERS=2
work=$(mktemp -d)
# On the way out (Ctrl-C reaches both runs), the crawl-side run ends first.
trap 'wait; rm -rf "$work"' EXIT

lowest_run() {
    # The wheel, built from a copy of the tree (a build in it leaves build/).
    git ls-files -z --cached --others --exclude-standard | tar -c --null -T - | tar -x -C "$work" --one-top-level=source
    .venv/bin/python -m pip wheel -q --no-deps -w "$work/dist" "$work/source"
    python3 -m venv --clear .venv-lowest
    .venv-lowest/bin/python -m pip install -q --upgrade pip
    .venv-lowest/bin/python -m pip install -q "$(ls "$work"/dist/*.whl)[postgres]" \
        "scrapy==$lowest" pytest pytest-twisted pytest-xdist
    .venv-lowest/bin/python -m scrapy version
    .venv-lowest/bin/python -m pytest -p no:cacheprovider --basetemp "$work/pytest" -q \
        -n "$LOWEST_WORKERS" --dist loadfile "${CRAWL_TESTS[@]}"
}
echo "The crawl-side tests on Scrapy $lowest run beside the whole suite (their log follows it)."
lowest_run > "$work/lowest.log" 2>&1 &
lowest_pid=$!

echo "== The whole suite on $(.venv/bin/python -m scrapy version)"
status=0
.venv/bin/python -m pytest -n "$WORKERS" --dist loadfile "$@" || status=$?
lowest_status=0
wait "$lowest_pid" || lowest_status=$?
echo
echo "== The crawl-side tests on the lowest Scrapy pyproject.toml allows, $lowest"
cat "$work/lowest.log"

# pytest's 5 is "no tests ran": a failure too.
failed=()
[ "$status" = 0 ] || failed+=("the whole suite (exit $status)")
[ "$lowest_status" = 0 ] || failed+=("the crawl-side tests on Scrapy $lowest (exit $lowest_status)")
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: $(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')"
    exit 1
fi
echo "Passed: the whole suite, and the crawl-side tests on Scrapy $lowest."
