"""Through `up` and the real SDK (conftest.py's traced run): every line is JSON, one request id
is followed from Envoy's access log into the edge, the lifecycle service and picod, nothing
secret is logged, and Envoy exports what the catalogue and the dashboard name."""

from __future__ import annotations

import json
import re

from observability.catalogue import dashboard_targets, documented, edge_exported, exported
from observability.conftest import Trace

PYTHON_FIELDS = {"time", "level", "process", "pid", "logger", "message"}


def test_every_line_of_the_run_is_one_json_object_naming_its_process(trace: Trace) -> None:
    processes = {line.get("process") for line in trace.lines}
    assert {"up", "lifecycle", "edge", "envoy"} <= processes, processes
    for line in trace.lines:
        if line.get("process") in ("up", "lifecycle", "edge"):
            assert set(line) >= PYTHON_FIELDS, line
    envoy = trace.of("envoy")
    assert {"time", "level", "pid", "logger", "message"} <= set(envoy[0])
    assert any(line["message"] == "caught ENVOY_SIGTERM" for line in envoy)
    assert trace.access_log(), "Envoy's access log is in the same stream"


def test_one_create_is_followed_from_envoy_through_the_edge_to_the_lifecycle(
    trace: Trace,
) -> None:
    (created,) = [
        entry
        for entry in trace.access_log()
        if entry["method"] == "POST" and entry["path"] in ("/sandboxes", "/v2/sandboxes")
    ]
    assert created["status"] == 201
    request_id, tenant = created["request_id"], created["tenant"]
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    caused = [line for line in trace.lines if line.get("request_id") == request_id]
    edge = [line for line in caused if line.get("process") == "edge"]
    lifecycle = [line for line in caused if line.get("process") == "lifecycle"]
    (answered,) = edge
    assert answered["message"].startswith("platform create_v")
    assert answered["status"] == 201 and answered["operation"] in ("create_v1", "create_v2")
    (rpc,) = [line for line in lifecycle if line.get("rpc") == "CreateSandbox"]
    assert rpc["grpc_status"] == "OK"
    for line in (answered, rpc):
        assert (line["tenant"], line["sandbox_id"]) == (tenant, trace.sandbox_id)
    # the kill is another request, with its own id
    (killed,) = [entry for entry in trace.access_log() if entry["method"] == "DELETE"]
    kill_lines = [
        line
        for line in trace.lines
        if line.get("request_id") == killed["request_id"] and "process" in line
    ]
    assert {line.get("rpc") or line.get("operation") for line in kill_lines} == {
        "kill",
        "KillSandbox",
    }


def test_a_command_is_followed_from_envoy_into_picod(trace: Trace) -> None:
    # the run's one command (found by path: a route that skips the Check has no sandbox_id)
    access_log = trace.access_log()
    (started,) = [entry for entry in access_log if entry["path"] == "/process.Process/Start"]
    picod = [json.loads(line) for line in trace.sandbox_log.splitlines()]
    assert all(line["process"] in ("picod", "interpreter") for line in picod)
    (line,) = [entry for entry in picod if entry.get("request_id") == started["request_id"]]
    assert line["message"].startswith("started process ")
    assert line["sandbox_id"] == trace.sandbox_id


def test_no_key_token_jwt_or_env_value_is_logged(trace: Trace) -> None:
    assert len(trace.secrets) == 6 and all(trace.secrets.values())
    for name, value in trace.secrets.items():
        assert value not in trace.raw, f"the {name} is in the gateway's log"
        assert value not in trace.sandbox_log, f"the {name} is in the sandbox's log"
    for text in (trace.raw, trace.sandbox_log):
        assert "eyJ" not in text  # no JWT of any kind (the edge signs one per sandbox)
        assert not re.search(r"e2b_[0-9a-f]{40}", text)
        assert not re.search(r"(?i)bearer [A-Za-z0-9._~+/=-]{8,}", text)


def test_envoy_exports_every_catalogued_stat(trace: Trace, rds_envoy_stats: str) -> None:
    running = {**exported(rds_envoy_stats), **exported(trace.envoy_stats)}
    rows = {name: metric for name, metric in documented().items() if name.startswith("envoy_")}
    assert len(rows) >= 20
    missing = sorted(name for name in rows if name not in running)
    assert missing == []
    differ = {name: (row, running[name]) for name, row in rows.items() if running[name] != row}
    assert differ == {}


def test_the_dashboard_plots_only_what_the_edge_and_a_real_envoy_export(
    trace: Trace, rds_envoy_stats: str
) -> None:
    from observability.catalogue import unexplained

    running = {**exported(rds_envoy_stats), **exported(trace.envoy_stats), **edge_exported()}
    assert unexplained(dashboard_targets(), running) == []
