"""Every audit fixture through `auditcov import` and through `auditcov replay` to a real sink on loopback.

The counts are worked out by hand from the files and written down per file. A file is imported alone into a
fresh store, or replayed alone into a run of its own, so each row stands by itself:
(events stored, duplicates, quarantined), or NOT_AUDIT_DATA for a file that is rejected whole.

- elastic/test-audit.log has five records, all with the anonymised auditID `abcde12345` and stage
  ResponseComplete: line 1 a `get pods`; lines 2 and 3 one `get lease` written twice (byte-identical); line 4 a
  GKE Cloud Audit Log record (quarantined, see merge/eventfiles.py); line 5 an AKS record holding a third
  request. The store identifies an event by (run, requestReceivedTimestamp, auditID, stage), so the three
  requests are told apart by their times though their IDs are one, and only line 3 is a duplicate: 3 stored,
  1 duplicate, 1 quarantined.
- elastic/test-kube-audit.log is one AKS record whose event is a JSON string in `properties.log`.
- falco: one event per file, except create_configmap_sensitive_values.json (six JSON lines) and fal_01_003.json
  (`{"kind": 0}`, quarantined). Two pairs of files hold variants of one request under one auditID
  (create_nginx_pod_no_secctx_1st_container_privileged_2nd_container / create_nginx_pod_privileged_2nd_container,
  anonymous_creates_namespace_foo / some-user_creates_namespace_foo): apart they are 1 each, together the
  second of each pair is a duplicate.
- apisnoop/e2e-event-grep-output.txt is grep output (`<file>:{json}`), and audit2rbac/demo-policy.yaml an audit
  policy: neither is audit data.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
import pytest
import trustme
from aiohttp import ClientSession, web
from click.testing import CliRunner

from auditcov.merge.stats import store_stats
from auditcov.merge.store import open_store, open_store_readonly
from auditcov.sink.cli import cli
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

AUDIT = Path(__file__).parent / "fixtures" / "audit"
NOT_AUDIT_DATA = None

EXPECTED = {
    "apisnoop/e2e-event-grep-output.txt": NOT_AUDIT_DATA,
    "apisnoop/example-user-agent.log": (8, 0, 0),
    "audit2rbac/demo-policy.yaml": NOT_AUDIT_DATA,
    "audit2rbac/demo.log": (37, 0, 0),
    "elastic/test-audit.log": (3, 1, 1),
    "elastic/test-kube-audit.log": (1, 0, 0),
    "falco/anonymous_creates_namespace_foo.json": (1, 0, 0),
    "falco/attach_cluster_admin_role.json": (1, 0, 0),
    "falco/attach_pod.json": (1, 0, 0),
    "falco/create_cluster_role_pod_exec.json": (1, 0, 0),
    "falco/create_cluster_role_wildcard_resources.json": (1, 0, 0),
    "falco/create_cluster_role_wildcard_verbs.json": (1, 0, 0),
    "falco/create_cluster_role_write_privileges.json": (1, 0, 0),
    "falco/create_clusterrole.json": (1, 0, 0),
    "falco/create_clusterrolebinding.json": (1, 0, 0),
    "falco/create_configmap.json": (1, 0, 0),
    "falco/create_configmap_no_sensitive_values.json": (1, 0, 0),
    "falco/create_configmap_sensitive_values.json": (6, 0, 0),
    "falco/create_deployment.json": (1, 0, 0),
    "falco/create_kube_system_secret.json": (1, 0, 0),
    "falco/create_nginx_pod_hostnetwork.json": (1, 0, 0),
    "falco/create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json": (1, 0, 0),
    "falco/create_nginx_pod_nohostnetwork.json": (1, 0, 0),
    "falco/create_nginx_pod_privileged.json": (1, 0, 0),
    "falco/create_nginx_pod_privileged_2nd_container.json": (1, 0, 0),
    "falco/create_nginx_pod_sensitive_mount.json": (1, 0, 0),
    "falco/create_nginx_pod_sensitive_mount_2nd_container.json": (1, 0, 0),
    "falco/create_nginx_pod_unprivileged.json": (1, 0, 0),
    "falco/create_nginx_pod_unsensitive_mount.json": (1, 0, 0),
    "falco/create_nginx_service_nodeport.json": (1, 0, 0),
    "falco/create_nginx_service_nonodeport.json": (1, 0, 0),
    "falco/create_pod_kube_public_namespace.json": (1, 0, 0),
    "falco/create_pod_kube_system_namespace.json": (1, 0, 0),
    "falco/create_secret.json": (1, 0, 0),
    "falco/create_service.json": (1, 0, 0),
    "falco/create_service_account_token_secret.json": (1, 0, 0),
    "falco/create_serviceaccount.json": (1, 0, 0),
    "falco/create_serviceaccount_kube_public_namespace.json": (1, 0, 0),
    "falco/create_serviceaccount_kube_system_namespace.json": (1, 0, 0),
    "falco/delete_cluster_role_kube_aggregator.json": (1, 0, 0),
    "falco/delete_clusterrole.json": (1, 0, 0),
    "falco/delete_clusterrolebinding.json": (1, 0, 0),
    "falco/delete_configmap.json": (1, 0, 0),
    "falco/delete_deployment.json": (1, 0, 0),
    "falco/delete_namespace_foo.json": (1, 0, 0),
    "falco/delete_secret.json": (1, 0, 0),
    "falco/delete_service.json": (1, 0, 0),
    "falco/delete_serviceaccount.json": (1, 0, 0),
    "falco/exec_pod.json": (1, 0, 0),
    "falco/fal_01_003.json": (0, 0, 1),
    "falco/minikube_creates_namespace_foo.json": (1, 0, 0),
    "falco/modify_cluster_role_node_problem_detector.json": (1, 0, 0),
    "falco/some-user_creates_namespace_foo.json": (1, 0, 0),
}
#: Every fixture in one run: per-file sums (100 stored, 1 duplicate, 2 quarantined) less the two falco pairs.
ALL_TOGETHER = (98, 3, 2)
FAST_RETRIES = ["--backoff", "0.01", "--attempts", "5"]


def counts(db_path: Path, run: str) -> tuple[int, int, int] | None:
    """(events, duplicates, quarantined) of `run`, or None when the store has no such run."""
    if not db_path.exists():
        return None
    db = open_store_readonly(db_path)
    try:
        if db.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
            return None
        stats = store_stats(db, run)
    finally:
        db.conn.close()
    return stats["events"], stats["duplicates"], stats["quarantined"]


def run_name(relative: str) -> str:
    return relative.replace("/", "_")


def test_every_fixture_file_has_its_expected_counts_written_down():
    assert sorted(str(path.relative_to(AUDIT)) for path in AUDIT.rglob("*") if path.is_file()) == sorted(EXPECTED)


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_import_each_fixture(relative, tmp_path):
    db = tmp_path / "store.db"
    result = CliRunner().invoke(cli, ["import", "--db", str(db), "--run", "fx", str(AUDIT / relative)])
    expected = EXPECTED[relative]
    if expected is NOT_AUDIT_DATA:
        assert result.exit_code == 1, result.output
        assert f"error: {AUDIT / relative}: not audit data" in result.stderr
        assert counts(db, "fx") is None
    else:
        assert result.exit_code == 0, result.output
        assert counts(db, "fx") == expected
        stored, duplicates, quarantined = expected
        assert f"{stored} events stored, {duplicates} duplicates, {quarantined} quarantined" in result.stdout


def test_import_names_file_and_line_of_quarantined_items(tmp_path):
    db = tmp_path / "store.db"
    args = ["import", "--db", str(db), str(AUDIT / "elastic/test-audit.log"), str(AUDIT / "falco/fal_01_003.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    reasons = sorted(row[0] for row in open_store(db).execute("SELECT reason FROM quarantine"))
    assert reasons[0].startswith(f"{AUDIT / 'elastic/test-audit.log'}:4: a GKE Cloud Audit Log record")
    assert reasons[1] == f"{AUDIT / 'falco/fal_01_003.json'}:1: kind '0' is not EventList or Event"
    assert "quarantined: " + reasons[1] in result.stderr


def test_import_everything_at_once_keeps_the_good_files_beside_the_bad(tmp_path, png_file):
    db = tmp_path / "store.db"
    files = [str(AUDIT / relative) for relative in sorted(EXPECTED)]
    # The fixture folder stands for every file under it.
    result = CliRunner().invoke(cli, ["import", "--db", str(db), "--run", "all", str(png_file), str(AUDIT)])
    assert result.exit_code == 1
    assert result.stderr.count("error: ") == 3
    assert f"error: {png_file}: not audit data: the content is binary" in result.stderr
    assert counts(db, "all") == ALL_TOGETHER
    assert "3 of 54 files unreadable" in result.stdout
    # Importing the same files again stores nothing twice.
    CliRunner().invoke(cli, ["import", "--db", str(db), "--run", "all", *files])
    assert counts(db, "all") == (98, 3 + 100 + 1, 2)


async def replay_cli(*args: str):
    """`auditcov replay ...` run in a thread, so the sink on this test's event loop keeps answering."""
    return await asyncio.to_thread(CliRunner().invoke, cli, ["replay", *args])


@pytest.fixture
async def sink(tmp_path):
    running = await start_sink(Settings(listen="127.0.0.1:0", db=str(tmp_path / "sink.db")))
    yield running
    await running.stop()


async def test_replay_each_fixture_to_a_real_sink(sink, tmp_path):
    db = tmp_path / "sink.db"
    for relative, expected in sorted(EXPECTED.items()):
        run = run_name(relative)
        result = await replay_cli("--to", f"{sink.url}/v1/audit/{run}", *FAST_RETRIES, str(AUDIT / relative))
        assert counts(db, run) == expected, relative
        if expected is NOT_AUDIT_DATA:
            assert result.exit_code == 1 and "not audit data" in result.stderr, relative
        else:
            assert result.exit_code == 0, (relative, result.output)
            assert "0 retries, 0 batches dropped" in result.stdout
            stored, duplicates, quarantined = expected
            assert f"sink stored {stored} events, {duplicates} duplicates, {quarantined} quarantined" in result.stdout


async def test_replay_everything_at_once_in_small_concurrent_batches(sink, tmp_path):
    files = [str(AUDIT / relative) for relative in sorted(EXPECTED)]
    url = f"{sink.url}/v1/audit/all"
    result = await replay_cli("--to", url, "--batch-size", "7", "--concurrency", "3", *FAST_RETRIES, *files)
    assert result.exit_code == 1  # two files are not audit data
    assert counts(tmp_path / "sink.db", "all") == ALL_TOGETHER
    # 103 items (100 distinct within their files, 1 repeated, 2 not events) in batches of 7.
    assert "15 batches, 103 events sent" in result.stdout
    assert "2 of 53 files unreadable" in result.stdout


@pytest.fixture
def certificates(tmp_path):
    """A CA; the sink's certificate for 127.0.0.1 and a client certificate it signed; and a bearer token."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for name, identity in (("server", "127.0.0.1"), ("client", "kube-apiserver")):
        issued = ca.issue_cert(identity)
        issued.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        (tmp_path / f"{name}.pem").write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    (tmp_path / "token").write_text("webhook-token-123\n")
    return tmp_path


async def test_replay_over_mtls_with_a_bearer_token(certificates):
    files = certificates
    settings = Settings(
        listen="127.0.0.1:0",
        db=str(files / "sink.db"),
        tls_cert=str(files / "server.pem"),
        tls_key=str(files / "server.key"),
        client_ca=str(files / "ca.pem"),
        ingest_token_file=str(files / "token"),
    )
    running = await start_sink(settings)
    try:
        url = f"{running.url}/v1/audit/tls"
        assert url.startswith("https://127.0.0.1:")
        demo = str(AUDIT / "audit2rbac/demo.log")
        tls = ["--ca", str(files / "ca.pem"), "--cert", str(files / "client.pem"), "--key", str(files / "client.key")]
        token = ["--token", str(files / "token")]
        retries = ["--backoff", "0.01", "--attempts", "2"]

        no_token = await replay_cli("--to", url, *tls, *retries, demo)
        assert no_token.exit_code == 1 and "HTTP 401" in no_token.stderr
        no_certificate = await replay_cli("--to", url, "--ca", str(files / "ca.pem"), *token, *retries, demo)
        assert no_certificate.exit_code == 1 and "1 batches dropped (37 events)" in no_certificate.stdout
        assert counts(files / "sink.db", "tls") is None

        result = await replay_cli("--to", url, *tls, *token, demo)
        assert result.exit_code == 0, result.output
        assert "1 batches, 37 events sent, 0 retries" in result.stdout
        assert counts(files / "sink.db", "tls") == (37, 0, 0)
    finally:
        await running.stop()


class FlakyFront:
    """A small server in front of the sink: it answers 503 to the first `failures` POSTs without passing them on;
    with `lose_answers`, it passes those on and still answers 503, as if the sink's answer were lost."""

    def __init__(self, sink_url: str, failures: int, *, lose_answers: bool = False):
        self.sink_url = sink_url
        self.failures = failures
        self.lose_answers = lose_answers
        self.attempts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        failing = self.attempts <= self.failures
        if failing and not self.lose_answers:
            return web.Response(status=503, text="sink unavailable")
        async with (
            ClientSession() as session,
            session.post(
                self.sink_url + request.path_qs,
                data=await request.read(),
                headers={"Content-Type": request.content_type},
            ) as answer,
        ):
            body = await answer.read()
        if failing:
            return web.Response(status=503, text="answer lost")
        return web.Response(status=answer.status, body=body, content_type="application/json")


async def front(aiohttp_server, sink, failures: int, **kwargs) -> tuple[FlakyFront, str]:
    flaky = FlakyFront(sink.url, failures, **kwargs)
    app = web.Application()
    app.router.add_post("/v1/audit/{run}", flaky.handle)
    server = await aiohttp_server(app)
    return flaky, str(server.make_url("/v1/audit/flaky"))


async def test_replay_retries_after_5xx_and_the_sink_stores_once(aiohttp_server, sink, tmp_path):
    flaky, url = await front(aiohttp_server, sink, 3)
    result = await replay_cli("--to", url, *FAST_RETRIES, str(AUDIT / "audit2rbac/demo.log"))
    assert result.exit_code == 0, result.output
    assert "1 batches, 37 events sent, 3 retries, 0 batches dropped" in result.stdout
    assert flaky.attempts == 4
    assert counts(tmp_path / "sink.db", "flaky") == (37, 0, 0)


async def test_a_batch_whose_answer_was_lost_is_resent_and_counted_as_duplicates(aiohttp_server, sink, tmp_path):
    flaky, url = await front(aiohttp_server, sink, 2, lose_answers=True)
    result = await replay_cli("--to", url, *FAST_RETRIES, str(AUDIT / "audit2rbac/demo.log"))
    assert result.exit_code == 0, result.output
    assert flaky.attempts == 3
    assert counts(tmp_path / "sink.db", "flaky") == (37, 74, 0)


async def test_replay_gives_up_after_five_attempts(aiohttp_server, sink, tmp_path):
    flaky, url = await front(aiohttp_server, sink, 1000)
    result = await replay_cli("--to", url, *FAST_RETRIES, "--batch-size", "30", str(AUDIT / "audit2rbac/demo.log"))
    assert result.exit_code == 1
    assert flaky.attempts == 10
    assert "0 batches, 0 events sent, 8 retries, 2 batches dropped (37 events)" in result.stdout
    assert result.stderr.count("dropped after 5 attempts: HTTP 503: sink unavailable") == 2
    assert counts(tmp_path / "sink.db", "flaky") is None


async def test_replay_to_a_port_nobody_listens_on(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/audit"
    result = await replay_cli("--to", url, *FAST_RETRIES, str(AUDIT / "falco/attach_pod.json"))
    assert result.exit_code == 1
    assert "4 retries, 1 batches dropped (1 events)" in result.stdout


def test_import_keeps_request_bodies_only_when_asked(tmp_path):
    configmap = str(AUDIT / "falco/create_configmap.json")
    for flag, db in ((), tmp_path / "plain.db"), (("--keep-bodies",), tmp_path / "bodies.db"):
        result = CliRunner().invoke(cli, ["import", "--db", str(db), *flag, configmap])
        assert result.exit_code == 0, result.output
    (plain,) = open_store(tmp_path / "plain.db").execute("SELECT request_object FROM events").fetchall()
    (kept,) = open_store(tmp_path / "bodies.db").execute("SELECT request_object FROM events").fetchall()
    assert plain == (None,)
    assert orjson.loads(kept[0])["kind"] == "ConfigMap"


def test_import_refuses_a_bad_run_name_before_reading(tmp_path):
    args = ["import", "--db", str(tmp_path / "s.db"), "--run", "no spaces", str(AUDIT / "falco/attach_pod.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "run name 'no spaces' is not 1-128 letters" in result.output


def test_import_quarantines_an_invalid_event_with_its_file_and_line(tmp_path):
    lines = (AUDIT / "audit2rbac/demo.log").read_bytes().splitlines()
    broken = orjson.loads(lines[2])
    del broken["stage"]
    log = tmp_path / "broken.log"
    log.write_bytes(b"\n".join([*lines[:2], orjson.dumps(broken), *lines[3:]]) + b"\n")
    db = tmp_path / "store.db"
    result = CliRunner().invoke(cli, ["import", "--db", str(db), str(log)])
    assert result.exit_code == 0, result.output
    assert counts(db, "default") == (36, 0, 1)
    ((reason, raw),) = open_store(db).execute("SELECT reason, raw FROM quarantine").fetchall()
    assert reason == f"{log}:3: stage is missing"
    assert orjson.loads(raw) == broken
