#!/usr/bin/env bash
# Runs the whole test suite. Installs the test and app (web demo) extras and the reference implementations the tests
# compare against (Meta's segment-anything, OpenCLIP, COCO's panopticapi). Those are installed without their dependencies on purpose:
# they would pull torchvision (unusable with the CPU torch wheel) or pin numpy<2; the tests import only the parts
# that need torch, numpy and Pillow.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test,app]" || exit 1
python -m pip install -q --no-deps -r tests/requirements-reference.txt || exit 1
python -m pytest -q tests "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure, not a pass." >&2
    exit 1
fi
exit "$status"
