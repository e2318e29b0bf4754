#!/usr/bin/env bash
# Runs the whole test suite. Installs the test and app (web demo) extras, and the reference implementations the tests
# compare against (Meta's segment-anything, OpenCLIP + timm, COCO's panopticapi) into tests/.reference-packages, a git-ignored folder
# that only the tests put on their path (tests/conftest.py): installed into the environment with --no-deps, as they
# must be (they would pull torchvision, unusable with the CPU torch wheel, or pin numpy<2), they would leave it with
# broken requirements (`pip check`) and unimportable packages. The folder is rebuilt when the requirements change.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test,app]" || exit 1
reference_dir=tests/.reference-packages
if ! cmp -s tests/requirements-reference.txt "$reference_dir/requirements-reference.txt"; then
    rm -rf "$reference_dir"
    python -m pip install -q --no-deps --target "$reference_dir" -r tests/requirements-reference.txt || exit 1
    cp tests/requirements-reference.txt "$reference_dir/requirements-reference.txt"
fi
# Without paths pytest runs `testpaths` (setup.cfg: tests/); with paths, only those.
python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure, not a pass." >&2
    exit 1
fi
exit "$status"
