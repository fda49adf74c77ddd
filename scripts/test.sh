#!/usr/bin/env bash
# Set up a virtual environment with the project and its test tools, lint, then
# run the whole test suite. Extra arguments go to pytest.
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

.venv/bin/python -m pytest "$@"
