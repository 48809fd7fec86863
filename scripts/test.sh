#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite (what CI runs).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
python3 -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no tests: that is a failure of the suite, say so clearly
[ $rc -eq 5 ] && echo "pytest collected no tests" >&2
exit $rc
