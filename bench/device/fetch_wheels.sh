#!/usr/bin/env bash
# Download the wheels of bench/device/wheels.txt for the GPU machine (CPython 3.12, x86-64
# manylinux) into bench/device/wheels/ (git-ignored), and print their sizes: what travels
# must stay within the device tool's 64 MiB together with the working tree.
#   bash bench/device/fetch_wheels.sh          # then: run(..., carry=["bench/device/wheels"])
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
specs=$(sed -e 's/#.*//' wheels.txt | tr -s ' \n' ' ')
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d wheels $specs
ls -l wheels/*.whl | awk '{print $5, $9}'
du -ch wheels/*.whl | tail -1
