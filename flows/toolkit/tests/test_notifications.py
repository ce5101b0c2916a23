"""`setup --notify URL`: failure notifications sent by the real server's own services.

Two paths, each end to end: an automation on a server with events on (as Prefect
Cloud has them), and a flow-run notification policy on the suite's 2.20 server
without events (its notification service polls every 4 s). A tiny HTTP receiver on
127.0.0.1 stands for the team's chat webhook.
"""

import asyncio
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import api_url_pointed_at, git, running_prefect_server
from deploy_helpers import call_command_line, run_command_line
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunNotificationPolicyFilter

import local_prefect
import util
from toolkit.deployer import notifications
from toolkit.deployer.prefect_api import delete_block

NOTIFY_WAIT_SECONDS = 30
SERVICE_POLL_SECONDS = 4  # FlowRunNotifications.loop_seconds in Prefect 2.20
SLACK_URL = "https://hooks.slack.com/services/T0TEST/B0TEST/slackTokenNotToBeShown"
FAILURE = "the partner's server refused orders_{day}.csv"


class Receiver:  # pylint: disable=too-few-public-methods
    """An HTTP server on 127.0.0.1 that keeps the body of every POST it gets."""

    def __init__(self):
        self.bodies: list[bytes] = []
        self.received_at: list[float] = []  # time.time() of each POST
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            """Answers every POST with 204 and keeps its body."""

            def do_POST(self):  # pylint: disable=invalid-name
                """Keep the body."""
                length = int(self.headers.get("Content-Length", 0))
                receiver.received_at.append(time.time())
                receiver.bodies.append(self.rfile.read(length))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args):  # quiet
                """No access log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A path and a query stand for the secret a real webhook URL carries.
        self.url = (
            f"http://127.0.0.1:{self.server.server_port}/hooks/receiver-token-123"
            "?sig=notToBeShown"
        )

    def wait_for_posts(self, count: int, timeout: float) -> list[bytes]:
        """The bodies once `count` have come, or all that came within `timeout`."""
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(self.bodies)


@pytest.fixture
def receiver():
    """A Receiver serving in a thread for the test."""
    yield from serving_receiver()


def serving_receiver():
    """A Receiver serving in a thread until the generator closes."""
    running = Receiver()
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def clean_notifications(prefect_api_url):
    """The server's notification policies and webhook blocks are the test's alone.

    Policies are server-wide: one left behind would send the session's later failed
    runs to a receiver that is gone (or to Slack), delaying the next test's posts.
    """
    asyncio.run(delete_notifications())
    yield prefect_api_url
    asyncio.run(delete_notifications())


async def delete_notifications() -> None:
    """Delete every notification policy, and every block setup named notify-..."""
    async with get_client() as client:
        for policy in await read_policies(client):
            await client.delete_flow_run_notification_policy(policy.id)
        for block in await client.read_block_documents(include_secrets=False):
            if block.name and block.name.startswith("notify-"):
                await client.delete_block_document(block.id)


async def read_policies(client):
    """Every notification policy, active or not."""
    return await client.read_flow_run_notification_policies(
        FlowRunNotificationPolicyFilter(is_active=None)
    )


def notification_state() -> dict:
    """The notify- blocks and the policies, with their ids and when they changed."""

    async def read():
        async with get_client() as client:
            blocks = await client.read_block_documents(include_secrets=False)
            return {
                "blocks": sorted(
                    (b.name, b.block_type.slug, str(b.id), str(b.updated), str(b.data))
                    for b in blocks
                    if b.name and b.name.startswith("notify-")
                ),
                "policies": sorted(
                    (str(p.id), str(p.updated), str(p.block_document_id), str(p.tags))
                    for p in await read_policies(client)
                ),
            }

    return asyncio.run(read())


def setup_notify(capfd, *urls: str):
    """`python3 flows/util.py setup --no-prompt --notify URL...` in this process.

    Output is read at the file-descriptor level: a library's log handler writes to
    the process's stderr, which capsys may not see."""
    notify = [argument for url in urls for argument in ("--notify", url)]
    return call_command_line(
        lambda: util.run_repository_command_line_interface(
            ["setup", "--no-prompt", *notify]
        ),
        capfd,
    )


def make_flow_fail(checkout) -> None:
    """Make the fixture flow raise at its start, committed and pushed on main."""
    flow_file = checkout / "flows" / "fixture_flow.py"
    source = flow_file.read_text(encoding="utf-8")
    first_step = "    source = connections.database_for("
    assert first_step in source
    failing = (
        f"    raise RuntimeError(f{FAILURE!r} + '\\nsecond line of the error')\n"
        + first_step
    )
    flow_file.write_text(source.replace(first_step, failing, 1), encoding="utf-8")
    git(checkout, "commit", "-q", "-am", "the fixture flow fails")
    git(checkout, "push", "-q", "origin", "main")


def deploy(checkout, capfd) -> str:
    """Deploy the fixture flow from the checkout's branch: the deployment's name."""
    code, out, err = run_command_line(checkout, "deploy", capsys=capfd)
    assert code == 0, err
    # The summary's first line: "Deployed <flow>/<deployment> as <stage> ..."
    return out.splitlines()[0].removeprefix("Deployed ").split(" as ")[0]


def set_up_failing_deployments(checkout, receiver, capfd, monkeypatch, made: str):
    """After `setup` with the receiver's URL (its output says it `made` the policy or
    the automation): (main, dev) deployments of a fixture flow that fails, on a
    process pool."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    monkeypatch.setenv("FLOWS_NOTIFY_URLS", receiver.url)  # as CI would pass it
    code, out, err = setup_notify(capfd)
    assert code == 0, err
    assert f"{made} notify-" in out, out
    assert "receiver-token" not in out + err
    make_flow_fail(checkout)
    production = deploy(checkout, capfd)
    git(checkout, "switch", "-q", "-c", "feature/quiet")
    return production, deploy(checkout, capfd)


@pytest.fixture
def failing_deployments(checkout, clean_notifications, receiver, capfd, monkeypatch):
    """On the suite's server without events: notified through a policy."""
    del clean_notifications  # before setup: the receiver's policy is the only one
    return set_up_failing_deployments(
        checkout, receiver, capfd, monkeypatch, "notification policy"
    )


@pytest.fixture(scope="module")
def events_server(tmp_path_factory):
    """A server of the module's own with events on: it runs automations, as Cloud
    does."""
    with running_prefect_server(tmp_path_factory.mktemp("events-server"), True) as url:
        yield url


@pytest.fixture
def events_api_url(events_server, monkeypatch):
    """PREFECT_API_URL pointed at the server with events, here and in children."""
    with api_url_pointed_at(events_server, monkeypatch) as url:
        yield url


def run_and_read_the_post(deployments, receiver, url: str, tmp_path, capfd) -> tuple:
    """Run the (main, dev) deployments once through one worker: (main's run, the one
    text posted), after checking that one post came, and no second one."""
    # One worker runs both: a dev notification would be queued beside main's.
    production_run, dev_run = local_prefect.run_deployments_once(
        deployments,
        os.environ["FLOWS_WORK_POOL"],
        url,
        tmp_path / "worker.log",
        {"day": "2024-08-03"},
    )
    assert [production_run.state.name, dev_run.state.name] == ["Failed"] * 2
    posts = receiver.wait_for_posts(1, NOTIFY_WAIT_SECONDS)
    assert posts, f"nothing posted within {NOTIFY_WAIT_SECONDS} s"
    delay = receiver.received_at[0] - production_run.state.timestamp.timestamp()
    assert 0 < delay < NOTIFY_WAIT_SECONDS
    time.sleep(SERVICE_POLL_SECONDS + 2)  # a second post would have come by now
    assert len(receiver.bodies) == 1, receiver.bodies
    text = json.loads(receiver.bodies[0])["text"]
    with capfd.disabled():  # shown with pytest -s
        print(f"\n--- posted {delay:.1f} s after the run failed ---\n{text}\n---")
    return production_run, text


def test_a_failed_run_of_main_posts_once_through_a_policy_and_a_dev_run_never(
    failing_deployments, receiver, prefect_api_url, capfd, tmp_path
):
    """On a 2.20 server without events: main's failed run reaches the webhook within
    30 s with what a person needs to act on it; a failed dev run sends nothing."""
    production_run, text = run_and_read_the_post(
        failing_deployments, receiver, prefect_api_url, tmp_path, capfd
    )
    ui_url = prefect_api_url.removesuffix("/api")
    assert text.splitlines() == [
        f"Prefect flow run Failed: fixture-flow / {production_run.name}",
        "Stage: main",
        "Error: Flow run encountered an exception. RuntimeError: "
        + FAILURE.format(day="2024-08-03"),
        "second line of the error",
        "Parameters: {'env': 'main', 'day': '2024-08-03'}",
        f"Flow run: {ui_url}/flow-runs/flow-run/{production_run.id}",
    ]


def test_a_failed_run_of_main_posts_once_through_an_automation_and_a_dev_run_never(
    checkout, events_api_url, receiver, capfd, monkeypatch, tmp_path
):  # pylint: disable=too-many-arguments,too-many-positional-arguments
    """On a server with events, as on Prefect Cloud: setup makes an automation (a
    second setup changes nothing), main's failed run posts the same message plus
    its deployment's name, and a failed dev run posts nothing."""
    deployments = set_up_failing_deployments(
        checkout,
        receiver,
        capfd,
        monkeypatch,
        "automation flows: failed runs of main to",
    )
    code, again, err = setup_notify(capfd)
    assert code == 0, err
    notify_lines = [line for line in again.splitlines() if "notify-" in line]
    assert len(notify_lines) == 2 and all(
        line.endswith(": unchanged") for line in notify_lines
    ), again
    production_run, text = run_and_read_the_post(
        deployments, receiver, events_api_url, tmp_path, capfd
    )
    ui_url = events_api_url.removesuffix("/api")
    assert text.splitlines() == [
        f"Prefect flow run Failed: fixture-flow / {production_run.name}",
        f"Deployment: {deployments[0].split('/', 1)[1]}",
        "Stage: main",
        "Error: Flow run encountered an exception. RuntimeError: "
        + FAILURE.format(day="2024-08-03"),
        "second line of the error",
        "Parameters: {'env': 'main', 'day': '2024-08-03'}",
        f"Flow run: {ui_url}/flow-runs/flow-run/{production_run.id}",
    ]


@pytest.mark.usefixtures("clean_notifications")
def test_setup_notify_twice_changes_nothing_and_never_shows_the_url(
    capfd, receiver, monkeypatch
):
    """Slack and custom webhooks get their block types; run 2 says unchanged for
    each, and the blocks and policies keep their ids and times. The URLs show
    nowhere: not in the output, not in the blocks' public data."""
    monkeypatch.setenv("FLOWS_NOTIFY_URLS", f" {SLACK_URL}\n{receiver.url} ")
    code, first, errors = setup_notify(capfd, receiver.url)  # also given twice
    assert code == 0, errors
    expected = []
    for block_type, url in (
        ("custom-webhook", receiver.url),
        ("slack-webhook", SLACK_URL),
    ):
        name = notifications.block_name(url)
        expected += [
            f"block {block_type}/{name}: created",
            f"notification policy {name} (Failed, Crashed, TimedOut; tag main): created",
        ]
    webhook_lines = [line for line in first.splitlines() if "notify-" in line]
    assert webhook_lines == expected
    after_first = notification_state()
    assert len(after_first["blocks"]) == len(after_first["policies"]) == 2

    code, second, errors = setup_notify(capfd, receiver.url)
    assert code == 0, errors
    assert [line for line in second.splitlines() if "notify-" in line] == [
        line.replace("created", "unchanged") for line in webhook_lines
    ]
    assert notification_state() == after_first

    for secret in ("slackTokenNotToBeShown", "receiver-token", "notToBeShown"):
        assert secret not in first + second + errors
        assert secret not in str(after_first["blocks"])


@pytest.mark.usefixtures("clean_notifications")
@pytest.mark.parametrize(
    "url, error",
    [
        ("ftp://files.example.invalid/hook-secret", "takes http:// or https://"),
        ("hooks.slack.com/services/hook-secret", "takes http:// or https://"),
        ("https:///hook-secret", "takes http:// or https://"),
        (
            "https://acme.webhook.office.com/webhookb2/hook-secret/IncomingWebhook/1/2",
            "refuses Office 365 connector URLs",
        ),
        (
            "https://prod-01.westus.logic.azure.com/not-a-workflow/hook-secret",
            "not a Teams Workflows webhook URL",
        ),
        ("https://hooks.slack.com/hook-secret", "not a Slack webhook URL"),
    ],
)
def test_a_url_it_cannot_use_is_one_line_and_nothing_is_saved(
    url, error, capfd, receiver
):
    """Checked before any change, alongside a good URL: exit 2, one line without the
    URL, and not even the good URL's block is saved."""
    before = notification_state()
    code, out, err = setup_notify(capfd, receiver.url, url)
    assert code == 2
    assert len(err.splitlines()) == 1 and error in err, err
    assert "hook-secret" not in out + err
    assert notification_state() == before == {"blocks": [], "policies": []}


@pytest.mark.usefixtures("clean_notifications")
def test_a_teams_workflows_url_gets_the_teams_block(capfd):
    """A Power Automate Workflows URL is saved as Prefect's Teams block; deleting the
    block (as the guide says to stop notifications) deletes its policy too."""
    url = (
        "https://prod-01.westus.logic.azure.com:443/workflows/abc/triggers/manual/"
        "paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=teamsSig"
    )
    code, out, err = setup_notify(capfd, url)
    assert code == 0, err
    assert "block ms-teams-webhook/notify-" in out
    state = notification_state()
    assert "teamsSig" not in out + err + str(state)
    assert len(state["policies"]) == 1
    asyncio.run(delete_block(notifications.block_name(url), "ms-teams-webhook"))
    assert notification_state() == {"blocks": [], "policies": []}
