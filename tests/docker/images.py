"""Build docker/Dockerfile offline for the tests: a Debian base from mmdebstrap, local wheels.

No image registry is reachable from the test machines, so the base image is made from
Debian packages: ``mmdebstrap --variant=minbase bookworm`` (what ``debian:bookworm-slim``
holds) into a tarball, then ``docker import``. The host's CA bundle is copied in and named
by ``PIP_CERT``, so that pip in the build trusts what the host trusts. The tarball and the
imported image are named by a hash of everything that goes into them, so a rerun reuses
them.

torch and torchvision come from wheels the host's pip downloads once (its own indexes,
find-links and cache apply) into a cache directory, which a small HTTP server on
127.0.0.1 serves to the build (``--network host``) as ``PIP_FIND_LINKS``, with every
wheel there pinned through ``PIP_CONSTRAINT``. Everything else comes from PyPI, as in a
user's build. Which torch: ``$LOSSKERNEL_DOCKER_TORCH`` (pip requirements, e.g.
``"torch==2.14.1 torchvision==0.29.1"``), else the host's torch version and the
torchvision release built for it (0.(N+15) for torch 2.N).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"          # its python3 (3.11) is what the Dockerfile's venv runs
PYTHON_VERSION = "3.11"     # the wheels downloaded for the image must fit it
MIRROR = "http://deb.debian.org/debian"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA = "/usr/local/share/losskernel-test/ca-certificates.crt"
IMAGE = "losskernel-test:pytest"
LABEL = "losskernel-test=1"  # on the test image only, so that pruning finds its old builds
PORT = 38471                 # fixed, so the build args (and the layer cache) stay the same
TORCH_ENV = "LOSSKERNEL_DOCKER_TORCH"


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "losskernel" / "docker"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(cmd: list[str], timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise with its output, which pytest then shows."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {out.returncode}:\n"
                           f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def docker_problem() -> str | None:
    """Why docker images cannot be built here, or None."""
    for tool in ("docker", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test.sh installs docker.io and mmdebstrap)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"docker info failed: {exc}"
    if info.returncode:
        return f"the docker daemon is not reachable (start dockerd): {info.stderr.strip()[-300:]}"
    return None


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def base_image() -> str:
    """The imported mmdebstrap base, made once per content key."""
    args = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            f"--customize-hook=mkdir -p \"$1{Path(IMAGE_CA).parent}\"",
            f"--customize-hook=copy-in {HOST_CA} {Path(IMAGE_CA).parent}", SUITE]
    changes = [f"ENV PIP_CERT={IMAGE_CA}", 'CMD ["bash"]']
    key = hashlib.sha256("\n".join(args + changes + [MIRROR]).encode()
                         + HOST_CA.read_bytes()).hexdigest()[:16]
    tag = f"losskernel-test-base:{key}"
    if image_exists(tag):
        return tag
    tar = cache_dir() / f"base-{key}.tar"
    if not tar.is_file():
        partial = tar.with_suffix(".partial")
        run(args + [str(partial), MIRROR])
        partial.rename(tar)
    run(["docker", "import", *(x for c in changes for x in ("--change", c)), str(tar), tag])
    return tag


def torch_requirements() -> list[str]:
    if os.environ.get(TORCH_ENV):
        return os.environ[TORCH_ENV].split()
    import torch

    minor = int(torch.__version__.split(".")[1])
    return [f"torch=={torch.__version__}", f"torchvision==0.{minor + 15}.*"]  # built for it


def wheels() -> Path:
    """A directory with the torch wheels and their dependencies, and constraints.txt."""
    reqs = torch_requirements()
    key = hashlib.sha256(" ".join(reqs + [PYTHON_VERSION]).encode()).hexdigest()[:16]
    path = cache_dir() / f"wheels-{key}"
    if not (path / "constraints.txt").is_file():
        shutil.rmtree(path, ignore_errors=True)
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
             "--python-version", PYTHON_VERSION, "-d", str(path), *reqs])
        pins = sorted("==".join(w.name.split("-")[:2]) for w in path.glob("*.whl"))
        (path / "constraints.txt").write_text("".join(f"{p}\n" for p in pins))
    return path


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (the first free port from PORT); yields the URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    for port in [*range(PORT, PORT + 20), 0]:  # the URL is a build arg: keep it the same
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError:
            continue
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass


def build_context(dest: Path) -> Path:
    """What docker/Dockerfile.dockerignore lets through: the package and its metadata."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    (dest / "docker").mkdir()
    shutil.copy2(REPO / "docker" / "Dockerfile", dest / "docker" / "Dockerfile")
    shutil.copytree(REPO / "losskernel_dist", dest / "losskernel_dist",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def build_image(context: Path) -> str:
    """docker/Dockerfile on the mmdebstrap base with the local torch wheels; returns the tag."""
    base = base_image()
    with served(wheels()) as url:
        run(["docker", "build", "--network", "host", "-f", str(context / "docker" / "Dockerfile"),
             "--build-arg", f"BASE={base}", "--build-arg", f"PIP_FIND_LINKS={url}",
             "--build-arg", f"PIP_CONSTRAINT={url}constraints.txt",
             "--force-rm", "--label", LABEL, "-t", IMAGE, str(context)],
            env={**os.environ, "DOCKER_BUILDKIT": "0"})
    # earlier builds of the test image (untagged now) would fill the disk: several GB each
    subprocess.run(["docker", "image", "prune", "-f", "--filter", f"label={LABEL}"],
                   capture_output=True)
    return IMAGE
