"""The runtime image built here from image/ with its own Dockerfile (image_checks.py
looks into it).

    python3 tools/docker_images.py build [--tag NAME]... [--tag-of-plan FILE] [--no-cache]

prints where the base came from, the build's time and the image's size. FILE is a
plan as `deploy --dry-run` prints it: the image is tagged as that deployment names it
(what `make demo WORKER=docker` runs).

The Dockerfile's base (its `ARG BASE_IMAGE`) is used when Docker has it or can pull
it. Where no image registry answers, a stand-in with the same Python and Prefect is
built once from Debian's packages (stand-in-base.Dockerfile: debootstrap, then pip)
and kept by tag, so later builds skip it. Builds use the host's network: the tests'
Docker daemon has no bridge.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from services import START_TIMEOUT_SECONDS, ServiceUnavailable

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPOSITORY_DIR / "image"
STAND_IN_DOCKERFILE = Path(__file__).resolve().parent / "stand-in-base.Dockerfile"
STAND_IN_REPOSITORY = "flows-template-base"
ROOTFS_TAG = "flows-template-rootfs:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
DEFAULT_TAG = "flows-template-image:local"
BUILD_TIMEOUT_SECONDS = 1200
RUN_TIMEOUT_SECONDS = 300
# A step the builder took from its cache (the classic builder, then BuildKit).
_CACHED_STEP = re.compile(r"^( ---> Using cache|#\d+ CACHED)", re.M)
_STEP = re.compile(r"^(Step \d+/\d+ :|#\d+ \[\d+/\d+\])", re.M)


class DockerError(RuntimeError):
    """A docker command failed; the message ends with its error output."""


def docker(*arguments, timeout: float = RUN_TIMEOUT_SECONDS, stdin=None) -> str:
    """`docker ARGUMENTS`; its output, or DockerError with the end of its errors."""
    try:
        completed = subprocess.run(
            ["docker", *map(str, arguments)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=stdin,
        )
    except FileNotFoundError as missing:
        raise DockerError("the docker command is not installed") from missing
    if completed.returncode != 0:
        error = (completed.stderr or completed.stdout).strip()[-2000:]
        raise DockerError(f"docker {arguments[0]} failed: {error}")
    return completed.stdout


def docker_answers() -> bool:
    """Whether the docker command reaches a running daemon."""
    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (DockerError, subprocess.TimeoutExpired):
        return False
    return True


@contextlib.contextmanager
def running_dockerd() -> Iterator[Path | None]:
    """A Docker daemon, for tests: the one already running, else dockerd started here
    and stopped at the end (yields its log file; None for a daemon already running).

    It starts with no bridge and no iptables rules: containers get the host's network
    or none, so nothing listens on or reaches a private address range. Images stay in
    Docker's own folder, so the stand-in base, once built, is kept.
    """
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if shutil.which("docker") is None:
        raise ServiceUnavailable("Docker is not installed (no docker command)")
    if docker_answers():
        yield None
        return
    if not Path(dockerd).exists():
        raise ServiceUnavailable(f"Docker's daemon is not installed ({dockerd})")
    if os.geteuid() != 0:
        raise ServiceUnavailable("dockerd is not running, and only root may start it")
    log = Path(tempfile.mkdtemp(prefix="flows-dockerd-"), "dockerd.log")
    with open(log, "ab") as output:
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [dockerd, "--bridge=none", "--iptables=false"],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not docker_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"dockerd did not answer; see {log}")
            time.sleep(0.5)
        yield log
    finally:
        process.terminate()  # it stops its containers and its containerd, then exits
        try:
            process.wait(timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()


def image_exists(name: str) -> bool:
    """Whether the daemon holds an image of that name."""
    try:
        docker("image", "inspect", "--format", "{{.Id}}", name, timeout=60)
    except DockerError:
        return False
    return True


def image_size(name: str) -> int:
    """The image's size in bytes, as `docker images` counts it."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", name).strip())


def default_base_image() -> str:
    """The base image/Dockerfile names in `ARG BASE_IMAGE=...`."""
    text = (IMAGE_DIR / "Dockerfile").read_text(encoding="utf-8")
    found = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    if found is None:
        raise DockerError("image/Dockerfile has no `ARG BASE_IMAGE=<image>` line")
    return found.group(1)


def stand_in_tag(base: str) -> str:
    """The stand-in's tag: prefecthq/prefect:2.20.27-python3.11 (with or without its
    @sha256 digest) gives flows-template-base:prefect-2.20.27-python3.11."""
    return f"{STAND_IN_REPOSITORY}:prefect-{without_digest(base).rsplit(':', 1)[1]}"


def without_digest(base: str) -> str:
    """`name:tag@sha256:...` as `name:tag`: the stand-in is made from the tag."""
    return base.split("@", 1)[0]


def _prefect_and_python(base: str) -> tuple[str, str]:
    found = re.fullmatch(
        r"prefecthq/prefect:([\d.]+)-python([\d.]+)", without_digest(base)
    )
    if found is None:
        raise DockerError(f"no stand-in is known for the base {base}")
    return found.group(1), found.group(2)


def build_stand_in_base(base: str) -> str:
    """Build the stand-in of `base` (debootstrap, `docker import`, python3 and pip's
    Prefect); its tag. Needs root and debootstrap."""
    prefect_version, python_version = _prefect_and_python(base)
    if python_version != "3.11":
        raise DockerError(f"the stand-in has bookworm's Python 3.11, not {base}'s")
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise ServiceUnavailable(
            f"{base} cannot be pulled, and its stand-in needs root and debootstrap "
            "(apt-get install debootstrap)"
        )
    tag = stand_in_tag(base)
    with tempfile.TemporaryDirectory(prefix="flows-stand-in-") as folder:
        rootfs, context = Path(folder, "rootfs"), Path(folder, "context")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=True,
        )
        with subprocess.Popen(
            ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        ) as tar:
            docker("import", "-", ROOTFS_TAG, stdin=tar.stdout, timeout=600)
        context.mkdir()
        shutil.copy(CA_BUNDLE, context / "ca-certificates.crt")
        docker(
            "build",
            "--network",
            "host",
            "--file",
            STAND_IN_DOCKERFILE,
            "--build-arg",
            f"ROOTFS={ROOTFS_TAG}",
            "--build-arg",
            f"PREFECT_VERSION={prefect_version}",
            "--tag",
            tag,
            context,
            timeout=BUILD_TIMEOUT_SECONDS,
        )
    docker("image", "rm", ROOTFS_TAG)  # only a step towards the stand-in
    return tag


def base_for_build(base: str) -> tuple[str, str]:
    """The base to build on and how it was found: Docker's own copy, a pull, else
    the stand-in (built once, then kept)."""
    if image_exists(base):
        return base, "present"
    try:
        docker("pull", "--quiet", base, timeout=BUILD_TIMEOUT_SECONDS)
        return base, "pulled"
    except DockerError:
        pass
    tag = stand_in_tag(base)
    if image_exists(tag):
        return tag, f"stand-in for {base}, kept from an earlier build"
    started = time.monotonic()
    build_stand_in_base(base)
    return tag, f"stand-in for {base}, built in {time.monotonic() - started:.0f} s"


@dataclass(frozen=True)
class BuiltImage:
    """What one build of image/ made, and what it cost."""

    tags: tuple[str, ...]
    base: str
    base_found: str
    seconds: float
    steps: int
    cached_steps: int
    size_bytes: int

    @property
    def name(self) -> str:
        """The first tag: the name the checks run."""
        return self.tags[0]

    def describe(self) -> str:
        """Two lines for a person: what was built on what, in how long, how big."""
        warmth = "cold" if self.cached_steps == 0 else "warm"
        return (
            f"base {self.base} ({self.base_found})\n"
            f"image {', '.join(self.tags)}: built in {self.seconds:.1f} s ({warmth}: "
            f"{self.cached_steps} of {self.steps} steps from the cache), "
            f"{self.size_bytes / 1e6:.0f} MB"
        )


def build_runtime_image(tags=(DEFAULT_TAG,), no_cache: bool = False) -> BuiltImage:
    """Build image/ with its own Dockerfile on the base found, tagged `tags`."""
    base, found = base_for_build(default_base_image())
    tag_arguments = [part for tag in tags for part in ("--tag", tag)]
    started = time.monotonic()
    output = docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base}",
        *(["--no-cache"] if no_cache else []),
        *tag_arguments,
        IMAGE_DIR,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    return BuiltImage(
        tags=tuple(tags),
        base=base,
        base_found=found,
        seconds=time.monotonic() - started,
        steps=len(_STEP.findall(output)),
        cached_steps=len(_CACHED_STEP.findall(output)),
        size_bytes=image_size(tags[0]),
    )


def main(arguments: list[str]) -> int:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--tag", action="append", help=f"default {DEFAULT_TAG}")
    parser.add_argument("--tag-of-plan", type=Path, help="a deploy --dry-run's JSON")
    parser.add_argument("--no-cache", action="store_true", help="a cold build")
    options = parser.parse_args(arguments)
    tags = options.tag or []
    if options.tag_of_plan:
        tags.append(
            json.loads(options.tag_of_plan.read_text(encoding="utf-8"))["image"]
        )
    if not docker_answers():
        print("error: no Docker daemon answers `docker info`", file=sys.stderr)
        return 2
    try:
        built = build_runtime_image(tags or (DEFAULT_TAG,), options.no_cache)
    except (DockerError, ServiceUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ServiceUnavailable) else 1
    print(built.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
