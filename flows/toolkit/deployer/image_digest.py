"""The digest a registry holds for an image's tag: what a deployment of main records
(`name@sha256:...`), so that its runs start the image that was built and tested,
whatever the tag points to later.

The registry is asked through its HTTP API (the OCI distribution API that Docker Hub,
GitHub's registry and `docker-registry` serve): a HEAD of the tag's manifest answers
with its digest. A registry that asks for a login gets the one in
FLOWS_DOCKER_REGISTRY_USERNAME and FLOWS_DOCKER_REGISTRY_PASSWORD, or an anonymous
token where it hands those out; neither is ever printed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import httpx

from toolkit.errors import UserError
from toolkit.settings import read_variable

USERNAME_VARIABLE = "FLOWS_DOCKER_REGISTRY_USERNAME"
PASSWORD_VARIABLE = "FLOWS_DOCKER_REGISTRY_PASSWORD"
TIMEOUT_SECONDS = 15
# An index first: a digest of a multi-platform image names all its platforms.
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHALLENGE_PART = re.compile(r'(\w+)="([^"]*)"')
_LOOPBACK_HOSTS = ("localhost", "127.", "[::1]")


class RegistryUnreachable(Exception):
    """No registry answered for the image: a laptop, `make demo`, a closed network."""


@dataclass(frozen=True)
class ImageName:
    """An image reference as Docker reads it: registry host, repository and tag."""

    host: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, image: str) -> "ImageName":
        """`host[:port]/path/name:tag`; Docker Hub when the first part names no host."""
        name, _, tag = image.rpartition(":")
        if not name or "/" in tag or "@" in image:
            raise UserError(f"image {image!r} names no tag to look up in its registry")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            return cls(first, rest, tag)
        repository = name if "/" in name else f"library/{name}"
        return cls("registry-1.docker.io", repository, tag)

    @property
    def base_url(self) -> str:
        """Plain HTTP on this machine's loopback, as Docker allows; TLS elsewhere."""
        scheme = "http" if self.host.startswith(_LOOPBACK_HOSTS) else "https"
        return f"{scheme}://{self.host}"


def pinned(image: str, digest: str) -> str:
    """`name:tag` made `name@sha256:...`: what runs cannot move with the tag."""
    return f"{image.rpartition(':')[0]}@{digest}"


def _credentials() -> tuple[str, str] | None:
    username, password = read_variable(USERNAME_VARIABLE), read_variable(
        PASSWORD_VARIABLE
    )
    return (username, password) if username and password else None


def _bearer_token(client: httpx.Client, challenge: str, name: ImageName) -> str:
    """A pull token from the realm the registry's 401 names (the token flow)."""
    fields = dict(_CHALLENGE_PART.findall(challenge))
    if "realm" not in fields:
        raise UserError(f"{name.host} asks for a login this deploy cannot give")
    parameters = {"scope": fields.get("scope", f"repository:{name.repository}:pull")}
    if "service" in fields:
        parameters["service"] = fields["service"]
    answer = client.get(fields["realm"], params=parameters, auth=_credentials())
    if answer.status_code in (401, 403):
        raise UserError(
            f"{name.host} refused a pull token for {name.repository}: set "
            f"{USERNAME_VARIABLE} and {PASSWORD_VARIABLE} to a login that may pull it"
        )
    answer.raise_for_status()
    body = answer.json()
    return body.get("token") or body.get("access_token") or ""


def _ask_manifest(client: httpx.Client, name: ImageName) -> httpx.Response:
    url = f"{name.base_url}/v2/{name.repository}/manifests/{name.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    answer = client.head(url, headers=headers)
    if answer.status_code == 401:
        challenge = answer.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            token = _bearer_token(client, challenge, name)
            headers["Authorization"] = f"Bearer {token}"
            answer = client.head(url, headers=headers)
        elif _credentials():
            answer = client.head(url, headers=headers, auth=_credentials())
    if answer.status_code == 200 and not answer.headers.get("Docker-Content-Digest"):
        answer = client.get(url, headers=headers, auth=None)
    return answer


def resolve_digest(image: str, transport: httpx.BaseTransport | None = None) -> str:
    """The digest (`sha256:...`) the image's registry holds for its tag.

    RegistryUnreachable when no registry answers; UserError when one answers that it
    has no such image, or refuses the login."""
    name = ImageName.parse(image)
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, transport=transport) as client:
            answer = _ask_manifest(client, name)
            if answer.status_code in (401, 403):
                raise UserError(
                    f"{name.host} refused to show {image}: set {USERNAME_VARIABLE} and "
                    f"{PASSWORD_VARIABLE} to a login that may pull it"
                )
            if answer.status_code == 404:
                raise UserError(
                    f"{image} is not in its registry: build and push the image (the "
                    "image workflow does on main) before deploying main"
                )
            answer.raise_for_status()
            digest = answer.headers.get("Docker-Content-Digest") or (
                "sha256:" + hashlib.sha256(answer.content).hexdigest()
            )
    except httpx.TransportError as error:
        reason = str(error) or type(error).__name__
        raise RegistryUnreachable(
            f"no registry answered at {name.host} ({reason})"
        ) from error
    except httpx.HTTPStatusError as error:
        raise RegistryUnreachable(
            f"{name.host} answered {error.response.status_code} for {image}"
        ) from error
    if not _DIGEST.match(digest):
        raise UserError(f"{name.host} gave {image} the digest {digest!r}, not sha256")
    return digest
