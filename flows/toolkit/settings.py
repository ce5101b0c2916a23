"""The template's settings: the one registry of every FLOWS_* environment variable.

SETTINGS holds one value each; PER_SYSTEM_VARIABLES the families `setup` reads per
connection. They are read when a command or a run needs them
(`Settings.from_environment()`), never at import time. `python3 flows/<flow>.py
--help` and the reference page (docs/reference.md) list them from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class Setting:
    """One setting: its default and the environment variable that overrides it."""

    env_var: str
    default: str
    help: str


SETTINGS = {
    "docker_registry": Setting(
        "FLOWS_DOCKER_REGISTRY",
        "",
        "registry the image is pulled from; empty means ghcr.io/<owner of origin>",
    ),
    "image_digest": Setting(
        "FLOWS_IMAGE_DIGEST",
        "auto",
        "how a deploy of main names its image: auto (by the digest its registry holds "
        "for the tag main, else by the tag, said in one line) or require (main is not "
        "deployed without the digest)",
    ),
    "work_pool": Setting(
        "FLOWS_WORK_POOL", "flows-docker", "work pool the deployments run on"
    ),
    "work_pool_type": Setting(
        "FLOWS_WORK_POOL_TYPE",
        "docker",
        "type of the work pool when it has to be created (docker; kubernetes; or "
        "process where no Docker daemon runs)",
    ),
    "kubernetes_namespace": Setting(
        "FLOWS_KUBERNETES_NAMESPACE",
        "default",
        "namespace a Kubernetes pool's flow runs start in (the one every cluster "
        "has, and prefect-kubernetes' own default)",
    ),
    "storage_root": Setting(
        "FLOWS_STORAGE_ROOT",
        "~/.prefect/flow-storage",
        "where the deployed copies of flows/ live: a folder the workers can read, "
        "or s3://bucket/prefix on S3 or an S3-compatible store",
    ),
    "s3_endpoint_url": Setting(
        "FLOWS_S3_ENDPOINT_URL",
        "",
        "the S3 API's address when the store is not AWS (MinIO, ...)",
    ),
    "s3_credentials_block": Setting(
        "FLOWS_S3_CREDENTIALS_BLOCK",
        "flows-storage",
        "flows-s3-credentials block with the store's key, for a deployer or a "
        "worker without AWS credentials of its own",
    ),
    "repo_name": Setting(
        "FLOWS_REPO_NAME",
        "",
        "repository name; empty means GITHUB_REPOSITORY, else origin's URL, "
        "else the checkout's folder",
    ),
    "repo_name_marker": Setting(
        "FLOWS_REPO_NAME_MARKER",
        "-flows-",
        "what separates {org}-{team} from the short name in the repository name",
    ),
    "main_branch": Setting(
        "FLOWS_MAIN_BRANCH",
        "main",
        "the branch whose deployments are the stage main, the one that runs for real",
    ),
    "deploy_lease_seconds": Setting(
        "FLOWS_DEPLOY_LEASE_SECONDS",
        "60",
        "how long a deploy's lease on its branch outlives the deploy if it is killed: "
        "the longest a killed deploy blocks the next one of its branch",
    ),
    "deploy_wait_seconds": Setting(
        "FLOWS_DEPLOY_WAIT_SECONDS",
        "300",
        "how long a deploy waits for another deploy of its branch to finish before "
        "it gives up (exit 2)",
    ),
    "output_dir": Setting(
        "FLOWS_OUTPUT_DIR",
        "",
        "the local folder a dev run writes to when no block names a sink; empty "
        "means flows/output",
    ),
    "notify_urls": Setting(
        "FLOWS_NOTIFY_URLS",
        "",
        "webhook URLs (whitespace-separated) that `setup` notifies of failed runs "
        "of main, as --notify does",
    ),
}
# Families of variables that `setup` reads, one per connection it saves: SYSTEM in
# capitals with dashes as underscores, FIELD as `setup --help` lists them.
PER_SYSTEM_VARIABLES = {
    "FLOWS_<SYSTEM>_DATABASE_<FIELD>": "a database block's URL and PASSWORD "
    "(setup --database SYSTEM)",
    "FLOWS_<SYSTEM>_SFTP_<FIELD>": "an SFTP block's HOST, PORT, USERNAME, "
    "KNOWN_HOSTS_FILE, PRIVATE_KEY_FILE or PASSWORD, REMOTE_DIR, ATOMIC_UPLOADS "
    "(setup --sftp SYSTEM)",
    "FLOWS_<SYSTEM>_S3_<FIELD>": "an S3 block's BUCKET, PREFIX, ENDPOINT_URL, REGION, "
    "ADDRESSING_STYLE, ACCESS_KEY_ID and SECRET_ACCESS_KEY (setup --s3 SYSTEM)",
    "FLOWS_<SYSTEM>_SMTP_<FIELD>": "a mail server block's HOST, PORT, SECURITY, "
    "SENDER, USERNAME, PASSWORD, TRUSTED_CERTIFICATES_FILE (setup --smtp SYSTEM)",
    "FLOWS_<SYSTEM>_API_<FIELD>": "a REST API block's BASE_URL, BEARER_TOKEN, "
    "USERNAME, PASSWORD, HEADERS (setup --api SYSTEM)",
    "FLOWS_S3_ACCESS_KEY_ID, FLOWS_S3_SECRET_ACCESS_KEY": "the flow storage bucket's "
    "key, saved by setup in the FLOWS_S3_CREDENTIALS_BLOCK block",
    "FLOWS_DOCKER_REGISTRY_USERNAME, FLOWS_DOCKER_REGISTRY_PASSWORD": "a login that "
    "may pull the image, where its registry asks for one before a deploy of main "
    "reads the digest of the tag main (never printed)",
}


def read_variable(name: str, environ=None) -> str:
    """One variable of a PER_SYSTEM_VARIABLES family, stripped; "" when unset."""
    environ = os.environ if environ is None else environ
    return environ.get(name, "").strip()


@dataclass(frozen=True)
class Settings:  # pylint: disable=too-many-instance-attributes
    """The settings in force: each from its environment variable, else its default."""

    docker_registry: str
    image_digest: str
    work_pool: str
    work_pool_type: str
    kubernetes_namespace: str
    storage_root: str
    s3_endpoint_url: str
    s3_credentials_block: str
    repo_name: str
    repo_name_marker: str
    main_branch: str
    deploy_lease_seconds: str
    deploy_wait_seconds: str
    output_dir: str
    notify_urls: str

    @classmethod
    def from_environment(cls, environ=None) -> "Settings":
        """Read every setting once, now."""
        environ = os.environ if environ is None else environ
        values = {
            # An empty variable (an unset repository variable in CI) means default.
            field.name: (
                environ.get(SETTINGS[field.name].env_var, "").strip()
                or SETTINGS[field.name].default
            )
            for field in fields(cls)
        }
        return cls(**values)

    @property
    def storage_is_s3(self) -> bool:
        """Whether the storage root is an s3:// URL rather than a folder."""
        return self.storage_root.startswith(S3_SCHEME)

    @property
    def storage_path(self) -> Path:
        """The storage root folder as an absolute path (local storage only)."""
        return Path(self.storage_root).expanduser().resolve()

    def storage_location(self, relative: str) -> str:
        """Where below the storage root `relative` lives: a path, or an s3:// URL."""
        if self.storage_is_s3:
            return f"{self.storage_root.rstrip('/')}/{relative}"
        return str(self.storage_path / relative)
