"""docker/Dockerfile, built and run: a loss kernel computed inside a container.

The image is built from this working tree on a Debian base made offline (tests/docker/
images.py), then runs ``losskernel sample`` and ``reduce`` on a small linear-task config
with the run directory mounted, without network. The host computes the same config; the
container's losses and kernel must match it: bitwise when torch and numpy are the same
versions on both sides, else within float32 rounding. The image must also hold what the
Dockerfile promises: torchvision beside torch, and WordNet for NLTK.

The tests skip, saying why, when docker or mmdebstrap is missing or the daemon is down;
``scripts/test.sh`` sets them up, requires this group, and fails when set-up fails
(``LOSSKERNEL_SKIP_DOCKER=1`` leaves them out on purpose).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import losskernel_dist as lk
from losskernel_dist.cli import main

from ..conftest import linear_config
from . import images

PROBLEM = images.docker_problem()
pytestmark = [pytest.mark.docker, pytest.mark.slow,
              pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]

PROBE = """
import json, numpy, torch, torchvision
from losskernel_dist.analysis.wordnet import load_wordnet
wn = load_wordnet()
print(json.dumps({"torch": torch.__version__, "numpy": numpy.__version__,
                  "torchvision": torchvision.__version__,
                  "wordnet": wn.get_version(),
                  "dog": sorted(h.name() for h in wn.synset("dog.n.01").hypernyms())}))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    context = images.build_context(tmp_path_factory.mktemp("context"))
    return images.build_image(context)


def docker_run(image: str, mount: Path, *args: str, entrypoint: str | None = None) -> str:
    """``docker run`` without network, ``mount`` at /runs, as the calling user."""
    cmd = ["docker", "run", "--rm", "--network", "none", "-v", f"{mount}:/runs",
           "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return images.run(cmd + [image, *args], timeout=600).stdout


def test_image_has_torchvision_and_wordnet(image, tmp_path):
    found = json.loads(docker_run(image, tmp_path, "-c", PROBE, entrypoint="python"))
    major_minor = tuple(int(x) for x in found["torch"].split(".")[:2])
    assert major_minor >= (2, 2)  # pyproject.toml's range
    vision = tuple(int(x) for x in found["torchvision"].split(".")[:2])
    assert vision == (0, major_minor[1] + 15)  # the torchvision release built for that torch
    assert found["wordnet"] == "3.0"
    assert found["dog"] == ["canine.n.02", "domestic_animal.n.01"]


def test_kernel_in_container_matches_host(image, tmp_path):
    host_run, mount = tmp_path / "host", tmp_path / "mount"
    mount.mkdir()
    data = linear_config(host_run)
    (tmp_path / "host.yaml").write_text(yaml.safe_dump(data))
    (mount / "config.yaml").write_text(yaml.safe_dump({**data, "output": "/runs/run"}))

    docker_run(image, mount, "sample", "/runs/config.yaml", "--no-progress")
    docker_run(image, mount, "reduce", "/runs/run", "--no-progress")
    assert main(["sample", str(tmp_path / "host.yaml"), "--no-progress"]) == 0
    assert main(["reduce", str(host_run), "--no-progress"]) == 0

    inside, host = lk.open_run(mount / "run"), lk.open_run(host_run)
    chains, draws = data["sampler"]["chains"], data["sampler"]["draws"]
    n = data["task"]["args"]["n_eval"]
    assert inside.losses().shape == (chains, draws, n)
    assert inside.kernel("cov").shape == inside.kernel("corr").shape == (n, n)
    assert np.isfinite(inside.kernel("cov").values).all()

    versions = json.loads(docker_run(
        image, mount, "-c", "import json, numpy, torch; print(json.dumps("
        "[torch.__version__, numpy.__version__]))", entrypoint="python"))
    import torch

    same = versions == [torch.__version__, np.__version__]
    for name, a, b in [("losses", inside.losses(), host.losses()),
                       ("cov", inside.kernel("cov"), host.kernel("cov")),
                       ("corr", inside.kernel("corr"), host.kernel("corr"))]:
        a, b = np.asarray(a.values), np.asarray(b.values)
        if same:
            assert a.tobytes() == b.tobytes(), f"{name}: same versions, different bits"
        else:  # another torch: the same arithmetic up to float32 rounding
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max(),
                                       err_msg=f"{name} (container {versions})")

