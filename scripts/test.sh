#!/usr/bin/env bash
# Set up a virtual environment with the project and its test tools, then run
# the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# The real-world corpus of the documents job's tests: the Debian Policy Manual.
if command -v apt-get >/dev/null && ! dpkg -s debian-policy >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debian-policy >/dev/null
    else
        echo "debian-policy is not installed: its test will be skipped (sudo apt-get install debian-policy)"
    fi
fi

# The dashboard's browser tests drive the system's Chromium (Playwright's
# own browser download is not used).
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

.venv/bin/python -m pytest "$@"
