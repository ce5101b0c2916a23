"""`setup`: make a Prefect workspace ready for the template's deployments."""

from __future__ import annotations

from toolkit.settings import Settings
from toolkit.cli.parsing import Command, Invocation, argument


def _setup(arguments, invocation: Invocation):
    del invocation  # the workspace, not the checkout, is what setup changes
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer import setup

    return setup.setup(
        Settings.from_environment(),
        databases=arguments.database,
        sftp_servers=arguments.sftp,
        env=arguments.env,
        ask=arguments.ask,
        webhook_urls=arguments.notify,
        systems={
            "s3": arguments.s3,
            "smtp": arguments.smtp,
            "smb": arguments.smb,
            "api": arguments.api,
        },
    )


COMMANDS = (
    Command(
        "setup",
        "make the Prefect workspace ready: work pool, queues main and dev, flow "
        "storage, connection blocks; a second run changes nothing",
        _setup,
        (
            argument(
                "--database",
                action="append",
                default=[],
                metavar="SYSTEM",
                help="save block SYSTEM-database-ENV from FLOWS_<SYSTEM>_DATABASE_URL "
                "and _PASSWORD (asked in a terminal when unset)",
            ),
            argument(
                "--sftp",
                action="append",
                default=[],
                metavar="SYSTEM",
                help="save block SYSTEM-sftp-ENV from FLOWS_<SYSTEM>_SFTP_HOST, _PORT, "
                "_USERNAME, _KNOWN_HOSTS_FILE, _PRIVATE_KEY_FILE or _PASSWORD, "
                "_REMOTE_DIR, _ATOMIC_UPLOADS",
            ),
            argument(
                "--s3",
                action="append",
                default=[],
                metavar="SYSTEM",
                help="save block SYSTEM-s3-ENV (S3 or S3-compatible bucket) from "
                "FLOWS_<SYSTEM>_S3_BUCKET, _PREFIX, _ENDPOINT_URL, _REGION, "
                "_ADDRESSING_STYLE (auto, path, virtual), _ACCESS_KEY_ID and "
                "_SECRET_ACCESS_KEY (both or neither)",
            ),
            argument(
                "--smtp",
                action="append",
                default=[],
                metavar="SYSTEM",
                help="save block SYSTEM-smtp-ENV (mail server) from "
                "FLOWS_<SYSTEM>_SMTP_HOST, _PORT, _SECURITY (starttls, tls, none), "
                "_SENDER, _USERNAME, _PASSWORD, _TRUSTED_CERTIFICATES_FILE",
            ),
            argument(
                "--smb",
                action="append",
                default=[],
                metavar="SYSTEM",
                help="save block SYSTEM-smb-ENV (Windows file share) from "
                "FLOWS_<SYSTEM>_SMB_HOST, _SHARE, _PORT, _DOMAIN, _USERNAME, "
                "_PASSWORD, _REMOTE_DIR, _ENCRYPT (yes, no)",
            ),
            argument(
                "--api",
                action="append",
                default=[],
                metavar="SYSTEM",
                help="save block SYSTEM-api-ENV (REST API) from "
                "FLOWS_<SYSTEM>_API_BASE_URL, _BEARER_TOKEN, or _USERNAME and "
                "_PASSWORD, _HEADERS (a JSON object)",
            ),
            argument(
                "--notify",
                action="append",
                default=[],
                metavar="URL",
                help="post failed, crashed and timed-out runs of main (tag main) to "
                "this Slack, Teams Workflows or other webhook URL; also from "
                "FLOWS_NOTIFY_URLS (whitespace-separated). The URL is kept in a "
                "block, never shown",
            ),
            argument(
                "--env",
                choices=["dev", "main", "prod"],
                default="main",
                help="the environment the connection blocks are for (prod: the old "
                "name of main)",
            ),
            argument(
                "--no-prompt",
                dest="ask",
                action="store_false",
                help="never ask for a value",
            ),
        ),
    ),
)
