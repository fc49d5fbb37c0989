"""The operator's side, proved against a real Prometheus: the dashboard and the alert rules.

A real ``prometheus`` server (Debian: ``apt-get install prometheus``) scrapes a relay running as
an OS process (``python -m outbox_relay relay``) every second while it handles a small workload
with publishes, skips, an outage (503), a rejection and a dead letter; and the ingestion worker
(``python -m outbox_relay worker``), run by the stand-in as Inngest's executor, whose embedder
(a loopback text-embeddings-inference server) fails one track a wave, so a run fails for good.
Then every PromQL expression of ``grafana/dashboards/outbox-relay.json`` and
``prometheus/alerts.yml`` is evaluated through ``/api/v1/query`` and must answer with data: a
misspelt metric or label would give an empty result, and an alert on it would never fire. The
same module checks the rule and config files with ``promtool``, the compose file with ``docker
compose config``, and the Dockerfile.

Waits poll Prometheus's API with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import pytest_asyncio
from aiohttp import web

from outbox_relay.adapters.embeddings import LexicalEmbedder
from outbox_relay.testing.audio import write_album
from outbox_relay.testing.inngest import EventApiStandIn, Reject, Status5xx
from outbox_relay.testing.postgres import free_port
from outbox_relay.testing.relay_process import WORKER_TEST_ENV, spawn_worker

from relay.harness import Harness

# Slow (a real Prometheus and promtool): CI runs it, -m "not slow" leaves it out. One xdist
# worker runs the whole module: its Prometheus and relays are started once, not once a worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prometheus")]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "outbox-relay.json"
ALERTS = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends prometheus"

JOB = "outbox-relay"  # what prometheus/alerts.yml selects
SCAN_JOB = "outbox-relay-scan"  # ... for the inbound scan
WORKER_JOB = "outbox-relay-worker"  # ... for the ingestion worker
REPLICA = "ops-relay"
REJECTED_ISRCS = ("USREJ0000001", "USREJ0000002")  # one a wave
INDEXED_ISRCS = ("USIDX0000001", "USIDX0000002")
VALID_TRACKS = 5
# A track the embedder refuses (its title has this in it): with no retries, its run fails.
UNEMBEDDABLE = "Unembeddable"
FAILING_ISRCS = ("USFAI0000001", "USFAI0000002")  # one a wave
EMBEDDING_DIMENSIONS = 32

module_loop = pytest.mark.asyncio(loop_scope="module")

EXPECTED_METRICS = {
    # counters (prometheus-client exposes them with the _total suffix)
    "outbox_relay_events_published_total",
    "outbox_relay_events_skipped_total",
    "outbox_relay_publish_failures_total",
    "outbox_relay_events_rejected_total",
    "outbox_relay_rows_dead_total",
    "outbox_relay_rows_released_total",
    "outbox_relay_leases_lost_total",
    "outbox_relay_qdrant_errors_total",
    "outbox_relay_wakeups_total",
    "outbox_relay_claims_total",
    "outbox_relay_retention_deleted_total",
    # gauges
    "outbox_relay_listen_connected",
    "outbox_relay_event_api_available",
    "outbox_relay_pending_rows",
    "outbox_relay_dead_rows",
    "outbox_relay_oldest_pending_age_seconds",
    "outbox_relay_table_dead_tuples",
    "outbox_relay_ready",
    # info
    "outbox_relay_build_info",
} | {
    f"outbox_relay_{histogram}_{suffix}"
    for histogram in (
        "batch_size",
        "batch_duration_seconds",
        "commit_to_accepted_seconds",
        "qdrant_check_duration_seconds",
        "event_api_request_duration_seconds",
    )
    for suffix in ("bucket", "count", "sum")
}


EXPECTED_WORKER_METRICS = {
    "outbox_relay_worker_runs_started_total",
    "outbox_relay_worker_runs_completed_total",
    "outbox_relay_worker_runs_failed_total",
    "outbox_relay_worker_step_errors_total",
    "outbox_relay_worker_reprocess_unknown_isrcs_total",
    "outbox_relay_worker_build_info",
} | {
    f"outbox_relay_worker_{histogram}_{suffix}"
    for histogram in ("step_duration_seconds", "ingestion_duration_seconds")
    for suffix in ("bucket", "count", "sum")
}


# -- the files under test, read without a YAML library ------------------------------------------


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows included."""
    dashboard = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def dashboard_variable_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (var["name"], var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
        for var in dashboard["templating"]["list"]
        if var["type"] == "query"
    ]


def alert_names_in_file() -> list[str]:
    return re.findall(r"^\s*-\s*alert:\s*(\S+)\s*$", ALERTS.read_text(), flags=re.MULTILINE)


def substitute(expr: str, instance: str) -> str:
    """What Grafana would send for this query with the variables set to our one relay."""
    replacements = {
        "$__rate_interval": "1m",
        "$__interval": "15s",
        "$__range": "5m",
        "${datasource}": "prometheus",
        "$datasource": "prometheus",
        "$job": JOB,
        "$instance": instance,
        "$replica": REPLICA,
    }
    for variable, value in replacements.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


_COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[-+]?[0-9][0-9.eE+]*\s*$")


def signal_of(expr: str) -> str:
    """The alert's signal: its expression without the final ``<op> <threshold>``."""
    signal_expr, count = _COMPARISON.subn("", expr.strip())
    assert count == 1, f"alert expression is not '<signal> <op> <number>': {expr!r}"
    return signal_expr


# -- a Prometheus scraping a relay under a workload ------------------------------------------


@dataclass
class Prometheus:
    url: str
    http: aiohttp.ClientSession
    instance: str  # the relay's scrape target

    async def api(self, path: str, **params: str) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            return body

    async def query(self, expr: str) -> dict[str, Any]:
        return await self.api("query", query=expr)

    async def results(self, expr: str) -> list[dict[str, Any]]:
        body = await self.query(expr)
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def until(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus: {what} not seen in {timeout} s")
            await asyncio.sleep(0.2)

    async def until_value(self, expr: str, timeout: float = 20.0) -> None:
        async def check() -> bool:
            return bool(await self.results(expr))

        await self.until(check, expr, timeout)


def _start_scan(dsn: str, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """``outbox-relay scan`` as a process: enabled, every second, dry run (no outbox rows, so the
    relay's workload stays the test's), over one real album, so its metrics carry data."""
    inbound, staging = tmp / "scan-inbound", tmp / "scan-staging"
    write_album(inbound / "album", artist="Scan", album="Metrics", year=2020, tracks=4)
    staging.mkdir()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO library.libraries (name, type, path) VALUES "
            "('Inbound', 'inbound', %s), ('Staging', 'staging', %s)",
            (str(inbound), str(staging)),
        )
        for key, value in {
            "enabled": "true",
            "dry_run": "true",
            "schedule": "* * * * * *",  # the 6-field form: every second
            "settle_seconds": "0",
            "scan_db_data_path": str(tmp / "scan-db"),
        }.items():
            conn.execute(
                "UPDATE library.settings SET value = %s WHERE key = %s",
                (value, f"staging_scan.{key}"),
            )
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "INNGEST_"))}
    with (tmp / "scan.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "outbox_relay", "scan"],
            env={
                **inherited,
                "DATABASE_URL": dsn,
                "OUTBOX_SCAN_HTTP_HOST": "127.0.0.1",
                "OUTBOX_SCAN_HTTP_PORT": str(port),
                "OUTBOX_SCAN_SETTINGS_POLL": "0.5",
                "OUTBOX_LOG_FORMAT": "json",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _start_embedder() -> tuple[web.AppRunner, str]:
    """A loopback text-embeddings-inference server (``POST /embed``) that answers 503 for a text
    with UNEMBEDDABLE in it and embeds every other one."""
    embedder = LexicalEmbedder(EMBEDDING_DIMENSIONS)

    async def embed(request: web.Request) -> web.Response:
        inputs = (await request.json())["inputs"]
        if any(UNEMBEDDABLE in text for text in inputs):
            return web.Response(status=503, text="cannot embed this one")
        return web.json_response(await embedder.embed(inputs))

    app = web.Application()
    app.router.add_post("/embed", embed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _prometheus_config(relay_port: int, scan_port: int, worker_port: int) -> str:
    # JSON is YAML: no YAML library needed to write the config.
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{relay_port}"]}]},
            {"job_name": SCAN_JOB, "static_configs": [{"targets": [f"127.0.0.1:{scan_port}"]}]},
            {
                "job_name": WORKER_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
            },
        ],
    }
    return json.dumps(config, indent=2)


def _exists(path: str) -> bool:
    return Path(path).exists()


def _start_prometheus(
    config: Path, tsdb: Path, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tsdb}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prometheus(
    pg_server: Any, template_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Prometheus]:
    if not _exists(PROMETHEUS):
        pytest.skip(f"needs the Prometheus server binary ({PROMETHEUS}): {INSTALL_HINT}")
    tmp = tmp_path_factory.mktemp("ops")
    dbname = f"outbox_test_ops_{free_port()}"
    dsn = pg_server.create_database(dbname, template=template_database.name)
    proc: subprocess.Popen[bytes] | None = None
    scan: subprocess.Popen[bytes] | None = None
    embedder: web.AppRunner | None = None
    try:
        async with EventApiStandIn() as standin, aiohttp.ClientSession() as http:
            harness = Harness(dsn, standin, tmp)
            try:
                # The worker first, synced with the stand-in, so every published event runs.
                embedder, embedding_url = await _start_embedder()
                worker = spawn_worker(
                    name="ops-worker",
                    dsn=dsn,
                    event_api_base_url=standin.base_url,
                    log_dir=tmp,
                    qdrant_path=tmp / "qdrant-worker",
                    with_relay=False,
                    env={
                        **WORKER_TEST_ENV,
                        "EMBEDDING_URL": embedding_url,
                        "EMBEDDING_DIMENSIONS": str(EMBEDDING_DIMENSIONS),
                        "OUTBOX_WORKER_RETRIES": "0",
                    },
                )
                harness.processes.append(worker)
                await worker.wait_ready()
                await standin.sync(worker.serve_url)
                await harness.seed_indexed(INDEXED_ISRCS, path=tmp / f"qdrant-{REPLICA}")
                relay = harness.spawn_relay(
                    name=REPLICA,
                    OUTBOX_MAX_ATTEMPTS="1",  # the rejected event becomes a dead letter at once
                    OUTBOX_REFRESH_INTERVAL="0.5",
                    OUTBOX_RETRY_BASE="0.05",
                    OUTBOX_RETRY_CAP="0.2",
                )
                await harness.wait_ready(relay)
                scan_port = free_port()
                scan = _start_scan(dsn, tmp, scan_port)

                port = free_port()
                config = tmp / "prometheus.yml"
                config.write_text(_prometheus_config(relay.http_port, scan_port, worker.http_port))
                log_path = tmp / "prometheus.log"
                proc = _start_prometheus(config, tmp / "tsdb", port, log_path)
                prom = Prometheus(f"http://127.0.0.1:{port}", http, f"127.0.0.1:{relay.http_port}")

                async def ready() -> bool:
                    if proc is not None and proc.poll() is not None:
                        raise AssertionError(f"prometheus exited:\n{log_path.read_text()}")
                    try:
                        async with http.get(f"{prom.url}/-/ready") as response:
                            return response.status == 200
                    except aiohttp.ClientError:
                        return False

                await prom.until(ready, "/-/ready")
                await prom.until_value(f'up{{job="{JOB}"}} == 1')
                # The scan: runs every second, so its counters and histogram move by themselves.
                for expr in (
                    f'up{{job="{SCAN_JOB}"}} == 1',
                    'outbox_relay_scan_runs_total{result="success"} >= 2',
                    "min(count_over_time(outbox_relay_scan_runs_total[1m])) >= 2",
                    "outbox_relay_scan_enabled == 1",
                ):
                    await prom.until_value(expr, timeout=30)

                # The workload, twice: an outage (one 503), publishes, three kinds of skip, and
                # one event Inngest rejects, which becomes a dead letter. A labelled series only
                # appears at its first increment, so rate() and increase() see nothing until a
                # second one: the second wave runs once Prometheus holds every series.
                rejected = frozenset(f"track-ingestion-{isrc}" for isrc in REJECTED_ISRCS)
                await standin.inject(Reject(ids=rejected))
                for wave in (1, 2):
                    await standin.inject(Status5xx(503), times=1)
                    await harness.enqueue_tracks(VALID_TRACKS, prefix=f"USOP{wave}")
                    await harness.enqueue_track(None)
                    await harness.enqueue_track("not-an-isrc")
                    await harness.enqueue_track(INDEXED_ISRCS[wave - 1])
                    await harness.enqueue_track(REJECTED_ISRCS[wave - 1])
                    await harness.enqueue_track(FAILING_ISRCS[wave - 1], title=UNEMBEDDABLE)
                    await harness.wait_settled(expected=wave * (VALID_TRACKS + 5), timeout=30)
                    # Until Prometheus has scraped the outcome (gauges refresh every 0.5 s) and
                    # holds at least two samples of every series.
                    for expr in (
                        f"outbox_relay_events_published_total >= {wave * VALID_TRACKS}",
                        f"outbox_relay_rows_dead_total >= {wave}",
                        f"outbox_relay_dead_rows >= {wave}",
                        "outbox_relay_pending_rows == 0",
                        f'outbox_relay_publish_failures_total{{cause="5xx"}} >= {wave}',
                        "count(outbox_relay_events_skipped_total) >= 3",
                        # the worker ran the published tracks: all indexed but the unembeddable
                        f"sum(outbox_relay_worker_runs_completed_total) >= {wave * VALID_TRACKS}",
                        f"sum(outbox_relay_worker_runs_failed_total) >= {wave}",
                        *(
                            f"min(count_over_time({name}[1m])) >= 2"
                            for name in (
                                "outbox_relay_events_skipped_total",
                                "outbox_relay_publish_failures_total",
                                "outbox_relay_wakeups_total",
                                "outbox_relay_event_api_request_duration_seconds_count",
                                "outbox_relay_worker_step_errors_total",
                                "outbox_relay_worker_step_duration_seconds_count",
                            )
                        ),
                    ):
                        await prom.until_value(expr)
                yield prom
            finally:
                if embedder is not None:
                    await embedder.cleanup()
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                if scan is not None and scan.poll() is None:
                    scan.send_signal(signal.SIGTERM)
                    try:
                        scan.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        scan.kill()
                        scan.wait()
                for process in harness.processes:
                    if process.proc.poll() is None:
                        process.proc.send_signal(signal.SIGTERM)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            process.proc.wait(timeout=10)
                await harness.close()
    finally:
        pg_server.drop_database(dbname)


# -- the proof ------------------------------------------------------------------------------


@module_loop
async def test_every_metric_is_scraped(prometheus: Prometheus) -> None:
    rows = await prometheus.results(f'count by (__name__) ({{job="{JOB}"}})')
    names = {row["metric"]["__name__"] for row in rows}
    assert sorted(EXPECTED_METRICS - names) == []

    reasons = {
        row["metric"]["reason"]
        for row in await prometheus.results("outbox_relay_events_skipped_total")
    }
    assert {"missing_isrc", "invalid_isrc", "already_indexed"} <= reasons
    info = await prometheus.results("outbox_relay_build_info")
    assert [row["metric"]["replica_id"] for row in info] == [REPLICA]
    assert info[0]["metric"]["version"]

    rows = await prometheus.results(f'count by (__name__) ({{job="{WORKER_JOB}"}})')
    worker_names = {row["metric"]["__name__"] for row in rows}
    assert sorted(EXPECTED_WORKER_METRICS - worker_names) == []


@module_loop
async def test_every_dashboard_query_returns_data(prometheus: Prometheus) -> None:
    targets = dashboard_targets()
    assert len(targets) >= 25
    failures = []
    for title, expr in targets:
        query = substitute(expr, prometheus.instance)
        body = await prometheus.query(query)
        if body.get("status") != "success" or not body["data"]["result"]:
            failures.append(f"{title}: {query} -> {body}")
    assert failures == []


@module_loop
async def test_dashboard_variables_find_the_relay(prometheus: Prometheus) -> None:
    variables = dict(dashboard_variable_queries())
    assert set(variables) == {"job", "instance"}
    expected = {"job": JOB, "instance": prometheus.instance}
    for name, query in variables.items():
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        body = await prometheus.api(
            f"label/{label}/values", **{"match[]": substitute(selector, prometheus.instance)}
        )
        assert body["status"] == "success", body
        assert expected[name] in body["data"], (name, body)


@module_loop
async def test_alert_rules_are_loaded_healthy_and_evaluate(prometheus: Prometheus) -> None:
    in_file = alert_names_in_file()
    assert len(in_file) == len(set(in_file)) >= 8

    async def all_evaluated() -> bool:
        body = await prometheus.api("rules", type="alert")
        rules = [r for group in body["data"]["groups"] for r in group["rules"]]
        return len(rules) == len(in_file) and all(r["health"] == "ok" for r in rules)

    await prometheus.until(all_evaluated, "every alert rule evaluated with health ok")
    body = await prometheus.api("rules", type="alert")
    rules = [r for group in body["data"]["groups"] for r in group["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(in_file)

    failures = []
    for rule in rules:
        assert rule["duration"] > 0, f"{rule['name']} has no `for:`"
        assert rule["labels"].get("severity") in {"critical", "warning", "info"}, rule["name"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), f"{rule['name']} has no {key}"
        whole = await prometheus.query(rule["query"])
        if whole.get("status") != "success":
            failures.append(f"{rule['name']}: {rule['query']} -> {whole}")
        signal_expr = signal_of(rule["query"])
        body = await prometheus.query(signal_expr)
        if body.get("status") != "success" or not body["data"]["result"]:
            failures.append(f"{rule['name']} signal: {signal_expr} -> {body}")
    assert failures == []


@module_loop
async def test_dead_letter_and_publish_error_alerts_go_pending(prometheus: Prometheus) -> None:
    """The workload made a dead letter, a 503 and a failed ingestion run (1 in 6 a wave): those
    three alerts start counting their `for:`."""
    wanted = {"OutboxRelayDeadLetters", "OutboxRelayPublishErrors", "OutboxRelayWorkerFailureRate"}

    async def active() -> bool:
        body = await prometheus.api("alerts")
        states = {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}
        return all(states.get(name) in {"pending", "firing"} for name in wanted)

    await prometheus.until(active, f"{sorted(wanted)} pending")
    body = await prometheus.api("alerts")
    names = {a["labels"]["alertname"] for a in body["data"]["alerts"]}
    # A healthy relay: not down, ready, connected, no lag; a worker that is up and runs events.
    assert names.isdisjoint(
        {
            "OutboxRelayDown",
            "OutboxRelayNotReady",
            "OutboxRelayListenDown",
            "OutboxRelayLagHigh",
            "OutboxRelayWorkerDown",
            "OutboxRelayIngestionStalled",
        }
    ), names


# -- the files, statically ------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def _require(binary: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"needs {binary}: {INSTALL_HINT}")


def test_promtool_checks_the_rules() -> None:
    _require(PROMTOOL)
    result = _run(PROMTOOL, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    _require(PROMTOOL)
    # The config names the rules by their path inside the container; check it with the
    # repository's file in that place.
    text = PROMETHEUS_CONFIG.read_text()
    assert "/etc/prometheus/alerts.yml" in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/alerts.yml", str(ALERTS)))
    result = _run(PROMTOOL, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert "job_name: outbox-relay" in text


def test_dashboard_is_consistent_with_provisioning() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "outbox-relay"
    ids = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            ids.append(panel["id"])
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
                assert panel.get("description"), panel["title"]
                for target in panel["targets"]:
                    assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    assert len(ids) == len(set(ids))
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert re.search(r"^\s*type:\s*prometheus\s*$", DATASOURCES.read_text(), re.MULTILINE)


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and _run("docker", "compose", "version").returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("needs the docker compose plugin (or docker-compose) to validate the file")
    result = _run(*command, "-f", str(COMPOSE), "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    text = COMPOSE.read_text()
    for needle in (
        "service_healthy",
        "service_completed_successfully",
        "INNGEST_EVENT_API_BASE_URL: http://inngest:8288",
        "QDRANT_URL: http://qdrant:6333",
        "./prometheus/alerts.yml:/etc/prometheus/alerts.yml",
        "./grafana/provisioning:/etc/grafana/provisioning",
        # the Inngest image has neither curl nor wget: its own binary is the probe
        '"inngest", "alpha", "doctor", "healthcheck"',
    ):
        assert needle in text, needle
    assert not re.search(r"test:.*\b(curl|wget)\b.*:8288", text)


# An exact release, never `latest` or a floating major/minor: PostgreSQL numbers its releases
# major.minor (15.18), everyone else here major.minor.patch.
_EXACT_TAG = {"postgres": r"\d+\.\d+"}
_EXACT_TAG_DEFAULT = r"v?\d+\.\d+\.\d+"


def _compose_images() -> dict[str, str]:
    """Service name → image, for every service that pulls its image (built ones excluded)."""
    images: dict[str, str] = {}
    service = None
    for line in COMPOSE.read_text().splitlines():
        if match := re.fullmatch(r"  ([a-z][a-z0-9_-]*):", line):
            service = match.group(1)
            continue
        match = re.fullmatch(r"\s+image:\s*(\S+)(\s+#.*)?", line)
        if match and service is not None and not match.group(1).endswith(":local"):
            images[service] = match.group(1)
    return images


def test_every_compose_image_is_pinned_to_an_exact_version() -> None:
    images = _compose_images()
    assert set(images) == {"postgres", "qdrant", "inngest", "prometheus", "grafana"}, images
    for service, image in images.items():
        name, _, tag = image.partition(":")
        assert tag, f"{service}: {image} has no tag (that is `latest`)"
        pattern = _EXACT_TAG.get(name, _EXACT_TAG_DEFAULT)
        assert re.fullmatch(pattern, tag), f"{service}: {image} is not an exact version"


def test_the_qdrant_server_matches_the_client() -> None:
    """Same major.minor as the qdrant-client the relay runs, whose compatibility check is on."""
    client = re.search(
        r"^qdrant-client==(\d+\.\d+)\.", (ROOT / "constraints.txt").read_text(), re.M
    )
    assert client, "qdrant-client is not pinned in constraints.txt"
    server = re.fullmatch(r"qdrant/qdrant:v(\d+\.\d+)\.\d+", _compose_images()["qdrant"])
    assert server, _compose_images()["qdrant"]
    assert server.group(1) == client.group(1)
    for module in (ROOT / "outbox_relay").rglob("*.py"):
        assert "check_compatibility=False" not in module.read_text(), module


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    instructions = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        assert keyword.isupper(), f"not an instruction: {line!r}"
        instructions.append((keyword, args.strip()))
    return instructions


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    known = {
        "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
        "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
    }  # fmt: skip
    assert {keyword for keyword, _ in instructions} <= known
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in instructions:
        by_keyword.setdefault(keyword, []).append(args)
    froms = by_keyword["FROM"]
    assert len(froms) >= 2, froms
    # one exact patch version for every stage (a moving tag changes the interpreter silently)
    images = {f.split()[0] for f in froms}
    assert len(images) == 1, froms
    [image] = images
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image
    user = by_keyword["USER"][-1]
    assert user.split(":")[0] not in {"root", "0"}, user
    assert any("pip install -c constraints.txt ." in run for run in by_keyword["RUN"])
    assert "/healthz" in by_keyword["HEALTHCHECK"][-1]
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["outbox-relay"]
    assert json.loads(by_keyword["CMD"][-1]) == ["relay"]
    assert by_keyword["STOPSIGNAL"] == ["SIGTERM"]
    assert set(" ".join(by_keyword["EXPOSE"]).split()) == {"9108", "8080"}

    hadolint = shutil.which("hadolint")
    if hadolint is not None:
        result = _run(hadolint, str(DOCKERFILE))
        assert result.returncode == 0, result.stdout + result.stderr
