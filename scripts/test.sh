#!/usr/bin/env bash
# Quick start, command 2: set up everything the tests need and run them all.
#   - .venv with the package and test tools (scripts/setup.sh)
#   - Debian packages: headless Chromium (report test), WordNet 3.0 (copied for NLTK)
#   - a real single-node SLURM cluster on 127.0.0.1 (slurm/test-cluster.sh; for disposable
#     test machines only)
#   - .venv-vision with torch 2.14.1 + torchvision 0.29.1 for the tests marked `vision`
#   - Docker (Debian's docker.io, dockerd started if it is not running) and mmdebstrap, for
#     the tests marked `docker`: they build docker/Dockerfile offline and run it (tests/docker)
# Then: ruff, python -m pytest (everything but `vision`), and the `vision` tests in .venv-vision.
#
# Nothing is skipped silently: if the SLURM cluster or the vision venv cannot be set up, this
# fails, and a `slurm` or `vision` test that skips fails the run too (tests/marker_groups.py).
# Leave them out only on purpose; they are then deselected and the reason is printed:
#   LOSSKERNEL_SKIP_SLURM=1    no SLURM cluster: deselect the tests marked `slurm`
#   LOSSKERNEL_SKIP_VISION=1   no .venv-vision: the tests marked `vision` do not run
#   LOSSKERNEL_SKIP_DOCKER=1   no Docker: deselect the tests marked `docker`
# PYTEST_ADDOPTS (pytest's own) adds arguments to both runs, e.g. PYTEST_ADDOPTS="-k test_config"
# to try this script on a few tests.
# The run ends by printing, per marked group (slow, distributed, slurm, gpu, vision, ...), how
# many tests ran, passed, failed, skipped (and why) or were deselected.
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP_SLURM=${LOSSKERNEL_SKIP_SLURM:-0}
SKIP_VISION=${LOSSKERNEL_SKIP_VISION:-0}
SKIP_DOCKER=${LOSSKERNEL_SKIP_DOCKER:-0}
fail() { echo "scripts/test.sh: ERROR: $*" >&2; exit 1; }
quiet() {  # quiet CMD...: run it, show its output only if it fails (minus pip's location noise)
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if [[ $rc != 0 ]]; then printf '%s\n' "$out" | grep -v "^WARNING: Location" >&2; fi
    return $rc
}

bash scripts/setup.sh --system
. .venv/bin/activate

export LOSSKERNEL_NLTK_DATA=${LOSSKERNEL_NLTK_DATA:-$PWD/.cache/nltk_data}
export NLTK_DATA=$LOSSKERNEL_NLTK_DATA
python -m losskernel_dist.analysis.wordnet setup "$NLTK_DATA"

MARKS="not vision"   # the vision tests run in .venv-vision below
NOTES=()
if [[ $SKIP_SLURM == 1 ]]; then
    MARKS="$MARKS and not slurm"
    NOTES+=("slurm: deselected because LOSSKERNEL_SKIP_SLURM=1")
else
    bash slurm/test-cluster.sh \
        || fail "the SLURM test cluster did not start (slurm/test-cluster.sh, output above); fix it, or set LOSSKERNEL_SKIP_SLURM=1 to leave the slurm tests out"
fi

if [[ $SKIP_VISION == 1 ]]; then
    NOTES+=("vision: not run because LOSSKERNEL_SKIP_VISION=1")
else
    [[ -x .venv-vision/bin/python ]] || python3 -m venv .venv-vision \
        || fail "could not create .venv-vision; set LOSSKERNEL_SKIP_VISION=1 to leave the vision tests out"
    quiet .venv-vision/bin/pip install -q torch==2.14.1 torchvision==0.29.1 \
        && quiet .venv-vision/bin/pip install -q -e ".[test,vision]" -c <(echo torch==2.14.1) \
        && .venv-vision/bin/python -c "import torchvision, losskernel_dist" \
        || fail "the vision venv .venv-vision could not be set up (output above); fix it, or set LOSSKERNEL_SKIP_VISION=1 to leave the vision tests out"
fi

if [[ $SKIP_DOCKER == 1 ]]; then
    MARKS="$MARKS and not docker"
    NOTES+=("docker: deselected because LOSSKERNEL_SKIP_DOCKER=1")
else
    docker_setup() {
        # docker.io only where no Docker is installed: it conflicts with Docker's docker-ce
        if ! command -v dockerd > /dev/null || ! command -v mmdebstrap > /dev/null; then
            DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q --no-install-recommends \
                $(command -v dockerd > /dev/null || echo docker.io) mmdebstrap || return 1
        fi
        docker info > /dev/null 2>&1 && return 0
        echo "starting dockerd (log: /tmp/losskernel-dockerd.log)"
        setsid dockerd > /tmp/losskernel-dockerd.log 2>&1 < /dev/null &
        for _ in $(seq 60); do docker info > /dev/null 2>&1 && return 0; sleep 1; done
        tail -20 /tmp/losskernel-dockerd.log >&2; return 1
    }
    docker_setup \
        || fail "Docker could not be set up (docker.io, mmdebstrap, dockerd; output above); fix it, or set LOSSKERNEL_SKIP_DOCKER=1 to leave the docker tests out"
    # the torch the image is built with offline: PyPI's torchvision needs PyPI's (CUDA) torch,
    # so the pair .venv-vision uses, not the CPU torch of .venv
    export LOSSKERNEL_DOCKER_TORCH=${LOSSKERNEL_DOCKER_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
fi

ruff check losskernel_dist tests bench examples

GROUPS_DIR=$(mktemp -d)
trap 'rm -rf "$GROUPS_DIR"' EXIT
REQUIRE=""; [[ $SKIP_SLURM == 1 ]] || REQUIRE=slurm
[[ $SKIP_DOCKER == 1 ]] || REQUIRE=${REQUIRE:+$REQUIRE,}docker
RC=0
LOSSKERNEL_GROUPS_FILE=$GROUPS_DIR/main LOSSKERNEL_REQUIRE_GROUPS=$REQUIRE \
    python -m pytest -q -ra -m "$MARKS" || RC=$?
VRC=0
if [[ $SKIP_VISION != 1 ]]; then
    LOSSKERNEL_GROUPS_FILE=$GROUPS_DIR/vision LOSSKERNEL_REQUIRE_GROUPS=vision \
        .venv-vision/bin/python -m pytest -q -ra -m vision || VRC=$?
fi

echo
echo "=== marked groups: tests in .venv (-m '$MARKS') ==="
cat "$GROUPS_DIR/main" 2>/dev/null || echo "(no summary: pytest stopped before the end, exit $RC)"
if [[ $SKIP_VISION != 1 ]]; then
    echo "=== marked groups: tests in .venv-vision (-m vision) ==="
    cat "$GROUPS_DIR/vision" 2>/dev/null || echo "(no summary: pytest stopped before the end, exit $VRC)"
fi
for note in ${NOTES[@]+"${NOTES[@]}"}; do echo "$note"; done
echo "pytest exit: .venv $RC$([[ $SKIP_VISION == 1 ]] || echo ", .venv-vision $VRC")"
(( RC == 0 && VRC == 0 ))
