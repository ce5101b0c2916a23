"""`setup --s3`, `--smtp`, `--smb` and `--api` against a real Prefect API: the blocks a flow's
connections load, secrets in Secret blocks, and a second run that changes nothing."""

import json

import pytest
from deploy_helpers import run_script

from toolkit import connections
from toolkit.object_storage import S3Sink

# Per kind: the option, the system, its variables, and the blocks the first run saves.
CASES = {
    "s3": (
        "lake",
        {
            "FLOWS_LAKE_S3_BUCKET": "campus-lake",
            "FLOWS_LAKE_S3_PREFIX": "/partner/outgoing/",
            "FLOWS_LAKE_S3_ENDPOINT_URL": "https://s3.campus.example",
            "FLOWS_LAKE_S3_ADDRESSING_STYLE": "path",
            "FLOWS_LAKE_S3_ACCESS_KEY_ID": "AKIASETUPLAKE0001",
            "FLOWS_LAKE_S3_SECRET_ACCESS_KEY": "lake-secret-setup-only-1",
        },
        [
            "block secret/lake-s3-main-access-key-id: created",
            "block secret/lake-s3-main-secret-access-key: created",
            "block flows-s3-connection/lake-s3-main: created",
        ],
    ),
    "smtp": (
        "registrar",
        {
            "FLOWS_REGISTRAR_SMTP_HOST": "smtp.campus.example",
            "FLOWS_REGISTRAR_SMTP_SENDER": "flows@campus.example",
            "FLOWS_REGISTRAR_SMTP_USERNAME": "flows",
            "FLOWS_REGISTRAR_SMTP_PASSWORD": "smtp-secret-setup-only-2",
        },
        [
            "block secret/registrar-smtp-main-password: created",
            "block flows-smtp-connection/registrar-smtp-main: created",
        ],
    ),
    "smb": (
        "registry",
        {
            "FLOWS_REGISTRY_SMB_HOST": "files.campus.example",
            "FLOWS_REGISTRY_SMB_SHARE": "\\\\Exports",
            "FLOWS_REGISTRY_SMB_DOMAIN": "CAMPUS",
            "FLOWS_REGISTRY_SMB_USERNAME": "svc-flows",
            "FLOWS_REGISTRY_SMB_PASSWORD": "smb-secret-setup-only-5",
            "FLOWS_REGISTRY_SMB_REMOTE_DIR": "/outgoing/",
            "FLOWS_REGISTRY_SMB_ENCRYPT": "yes",
        },
        [
            "block secret/registry-smb-main-password: created",
            "block flows-smb-connection/registry-smb-main: created",
        ],
    ),
    "api": (
        "lms",
        {
            "FLOWS_LMS_API_BASE_URL": "https://lms.campus.example/api/v1",
            "FLOWS_LMS_API_BEARER_TOKEN": "api-token-setup-only-3",
            "FLOWS_LMS_API_HEADERS": '{"X-Api-Key": "api-key-setup-only-4"}',
        },
        [
            "block secret/lms-api-main-bearer-token: created",
            "block secret/lms-api-main-headers: created",
            "block flows-api-connection/lms-api-main: created",
        ],
    ),
}


def loaded_block(kind: str, system: str):
    """The block a flow's `env=main` connection gets."""
    if kind == "s3":
        sink = connections.s3_sink_for(system, "main")
        assert isinstance(sink, S3Sink)
        return sink.connection
    if kind == "smtp":
        return connections.mail_server_for(system, "main")
    if kind == "smb":
        return connections.smb_sink_for(system, "main").connection
    return connections.api_for(system, "main")


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("smtp", marks=pytest.mark.email),
        pytest.param("smb", marks=pytest.mark.smb),
        pytest.param("api", marks=pytest.mark.rest),
    ],
)
def test_setup_saves_the_block_and_a_second_run_changes_nothing(
    kind, checkout, monkeypatch
):
    """Run 1 saves the block and its secrets, run 2 changes nothing; the flow's
    connection loads it, and no secret is printed."""
    system, variables, saved = CASES[kind]
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    command = ("flows/util.py", "setup", f"--{kind}", system, "--no-prompt")

    first = run_script(checkout, *command)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-len(saved) :] == saved
    second = run_script(checkout, *command)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-len(saved) :] == [
        line.replace(": created", ": unchanged") for line in saved
    ]

    block = loaded_block(kind, system)
    if kind == "s3":
        assert (block.bucket, block.prefix, block.addressing_style) == (
            "campus-lake",
            "partner/outgoing",
            "path",
        )
        assert block.endpoint_url == "https://s3.campus.example"
        assert block.secret_access_key.get() == "lake-secret-setup-only-1"
    elif kind == "smtp":
        assert (block.host, block.port, block.security) == (
            "smtp.campus.example",
            587,
            "starttls",
        )
        assert block.password.get() == "smtp-secret-setup-only-2"
    elif kind == "smb":
        assert (block.host, block.share, block.port, block.login()) == (
            "files.campus.example",
            "Exports",
            445,
            "CAMPUS\\svc-flows",
        )
        assert (block.remote_dir, block.encrypt) == ("outgoing", True)
        assert block.password.get() == "smb-secret-setup-only-5"
    else:
        assert block.headers == {}  # in clear: nothing
        assert json.loads(block.secret_headers.get()) == {
            "X-Api-Key": "api-key-setup-only-4"
        }
        assert block.bearer_token.get() == "api-token-setup-only-3"
    for secret in (value for name, value in variables.items() if "setup-only" in value):
        for output in (first.stdout, first.stderr, second.stdout, second.stderr):
            assert secret not in output


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize(
    "variables, line",
    [
        pytest.param(
            {"FLOWS_LAKE_S3_BUCKET": "b", "FLOWS_LAKE_S3_ACCESS_KEY_ID": "AKIAONLY"},
            "set both FLOWS_LAKE_S3_ACCESS_KEY_ID and FLOWS_LAKE_S3_SECRET_ACCESS_KEY,"
            " or neither",
            marks=pytest.mark.s3,
            id="s3-one-key",
        ),
        pytest.param(
            {"FLOWS_LAKE_S3_BUCKET": "b", "FLOWS_LAKE_S3_ADDRESSING_STYLE": "dns"},
            "FLOWS_LAKE_S3_ADDRESSING_STYLE must be one of auto, path, virtual, "
            "not 'dns'",
            marks=pytest.mark.s3,
            id="s3-style",
        ),
        pytest.param(
            {
                "FLOWS_LAKE_SMTP_HOST": "h",
                "FLOWS_LAKE_SMTP_SENDER": "s@x",
                "FLOWS_LAKE_SMTP_PORT": "smtp",
            },
            "FLOWS_LAKE_SMTP_PORT must be a number, not 'smtp'",
            marks=pytest.mark.email,
            id="smtp-port",
        ),
        pytest.param(
            {"FLOWS_LAKE_API_BASE_URL": "lms.example", "FLOWS_LAKE_API_HEADERS": ""},
            "FLOWS_LAKE_API_BASE_URL must start with http:// or https://",
            marks=pytest.mark.rest,
            id="api-url",
        ),
        pytest.param(
            {"FLOWS_LAKE_API_BASE_URL": "https://x", "FLOWS_LAKE_API_HEADERS": "[1]"},
            'FLOWS_LAKE_API_HEADERS must be a JSON object of strings: {"Accept": '
            '"application/json"}',
            marks=pytest.mark.rest,
            id="api-headers",
        ),
    ],
)
def test_a_wrong_value_is_one_line_and_changes_nothing(
    variables, line, checkout, monkeypatch
):
    """A value setup cannot use: exit 2, one line naming the variable, no block."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    kind = next(iter(variables)).split("_")[2].lower()
    refused = run_script(
        checkout, "flows/util.py", "setup", f"--{kind}", "lake", "--no-prompt"
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines() == [f"error: {line}"]
    assert "block" not in refused.stdout
