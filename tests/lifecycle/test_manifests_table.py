"""lifecycle/manifests.py as tables: the pure mapping between Kubernetes objects and ours.

Expected values come from the module's contract (its docstring, docs/contracts/README.md
"Kubernetes mode") and agent-sandbox's field names (notes/agent-sandbox-facts.md): Go
durations for AgentCube's timeouts, Kubernetes quantities for cpu and memory (limits, else
requests, else 2 / 512), our labels and annotations on a Sandbox CR, and anything a user or
another controller could have put there read as "absent" rather than trusted or crashed on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from extproc.k8s.discovery import V1ALPHA1, V1BETA1, kinds_for
from extproc.lifecycle import manifests as m
from extproc.lifecycle.sandboxes import OnTimeout, State

DEFAULT = 777


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", 900),
        ("90s", 90),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1h30m15s", 5415),
        ("1.5h", 5400),
        ("1500ms", 1),
        ("2h0m0s", 7200),  # what Go prints
        ("500ms", DEFAULT),  # less than a whole second
        ("0s", DEFAULT),
        ("", DEFAULT),
        (None, DEFAULT),
        (900, DEFAULT),  # a number is not a duration string
        ("-15m", DEFAULT),
        ("+15m", DEFAULT),
        ("15", DEFAULT),  # no unit
        ("15M", DEFAULT),
        ("15 m", DEFAULT),
        (" 15m", DEFAULT),
        ("15m ", DEFAULT),
        ("15mjunk", DEFAULT),
        ("1e3s", DEFAULT),
        ("15m\n", DEFAULT),
        ("\u0661\u0665m", DEFAULT),  # Arabic-Indic digits: Go takes ASCII digits only
    ],
)
def test_go_duration(text: Any, expected: int) -> None:
    assert m.go_duration_s(text, DEFAULT) == expected


@pytest.mark.parametrize(
    ("spec", "session_s", "max_s"),
    [
        ({}, m.DEFAULT_SESSION_TIMEOUT_S, m.DEFAULT_MAX_SESSION_S),
        ({"sessionTimeout": "5m", "maxSessionDuration": "2h"}, 300, 7200),
        ({"sessionTimeout": "soon", "maxSessionDuration": -1}, 900, 8 * 3600),
    ],
)
def test_session_times(spec: dict[str, Any], session_s: int, max_s: int) -> None:
    ci = {"spec": spec}
    assert (m.session_timeout_s(ci), m.max_session_s(ci)) == (session_s, max_s)


def _resources(section: str, name: str, value: object) -> dict[str, Any]:
    return {section: {name: value}}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, 2),
        (_resources("limits", "cpu", "2"), 2),
        (_resources("limits", "cpu", 4), 4),  # YAML may give a number
        (_resources("limits", "cpu", "500m"), 1),  # rounded up: at least one
        (_resources("limits", "cpu", "2500m"), 3),
        (_resources("limits", "cpu", "1.5"), 2),
        (_resources("limits", "cpu", "0"), 1),
        (_resources("requests", "cpu", "3"), 3),
        ({"limits": {"cpu": "1"}, "requests": {"cpu": "3"}}, 1),  # limits first
        ({"limits": {"memory": "1Gi"}, "requests": {"cpu": "3"}}, 3),
        ({"limits": None, "requests": {"cpu": "3"}}, 3),
        (_resources("limits", "cpu", "-1"), 2),
        (_resources("limits", "cpu", "lots"), 2),
        (_resources("limits", "cpu", ""), 2),
        (_resources("limits", "cpu", "1e3"), 2),  # exponent form: not read, the default
        (_resources("limits", "cpu", "1.2.3"), 2),  # unreadable: the default
        (_resources("limits", "cpu", "."), 2),
    ],
)
def test_cpu_count(resources: dict[str, Any], expected: int) -> None:
    assert m.cpu_count(resources) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 512),
        ("512Mi", 512),
        ("1Gi", 1024),
        ("1.5Gi", 1536),
        ("1G", 953),  # 10**9 bytes, in MiB, rounded down
        ("1000M", 953),
        ("128974848", 123),  # plain bytes
        (268435456, 256),
        ("1Ki", 1),  # at least 1
        ("1", 1),
        ("1Ti", 1024 * 1024),
        ("100m", 512),  # millibytes: no memory size, the default
        ("1Pi", 512),  # a suffix not read: the default
        ("1gi", 512),  # suffixes are case-sensitive
        ("-1Gi", 512),
        ("lots", 512),
        ("", 512),
    ],
)
def test_memory_mb(value: object, expected: int) -> None:
    resources = {} if value is None else _resources("limits", "memory", value)
    assert m.memory_mb(resources) == expected


@pytest.mark.parametrize(
    ("ports", "listed", "annotation"),
    [
        (None, (), None),
        ([], (), None),
        ([{"port": 49999}], (49999,), "49983,49999"),
        ([{"port": 3000}, {"port": 49999}], (3000, 49999), "3000,49983,49999"),
        ([{"port": 49983}], (), "49983"),  # envd's is never listed twice
        ([{"port": 3000}, {"port": 3000}], (3000,), "3000,49983"),
        ([{"port": "3000"}, "3000", None, {"name": "x"}], (), "49983"),  # unreadable entries
        ([{"port": 8080}, {"port": 80}], (8080, 80), "80,8080,49983"),
    ],
)
def test_ports(ports: object, listed: tuple[int, ...], annotation: str | None) -> None:
    ci = {"spec": {"ports": ports}}
    assert (m.ci_ports(ci), m.open_ports(ci)) == (listed, annotation)


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        ({}, 0),
        ({"warmPoolSize": 3}, 3),
        ({"warmPoolSize": 0}, 0),
        ({"warmPoolSize": -2}, 0),
        ({"warmPoolSize": "3"}, 0),
        ({"warmPoolSize": 2.5}, 0),
    ],
)
def test_warm_pool_size(spec: dict[str, Any], size: int) -> None:
    assert m.warm_pool_size({"spec": spec}) == size


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"authMode": "picod"}, True),
        ({"authMode": "none"}, False),
        ({"authMode": "None"}, True),
        ({"authMode": ""}, True),
    ],
)
def test_jwt_auth(spec: dict[str, Any], expected: bool) -> None:
    """Only the exact `none` turns the JWT off: anything unknown keeps the stricter mode."""
    assert m.jwt_auth({"spec": spec}) is expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1.9, "1970-01-01T00:00:01Z"),
        (1_800_000_000, "2027-01-15T08:00:00Z"),
    ],
)
def test_rfc3339(seconds: float, text: str) -> None:
    assert m.rfc3339(seconds) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:10Z", 10.0),
        ("2027-01-15T08:00:00Z", 1_800_000_000.0),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000.0),
        ("2027-01-15T08:00:00.5Z", 1_800_000_000.5),
        ("", None),
        (None, None),
        (1_800_000_000, None),  # not a string
        ("yesterday", None),
        ("2027-13-01T00:00:00Z", None),
    ],
)
def test_parse_time(text: object, expected: float | None) -> None:
    assert m.parse_time(text) == expected


@pytest.mark.parametrize(
    ("version", "running", "fields"),
    [
        (V1BETA1, True, {"operatingMode": "Running"}),
        (V1BETA1, False, {"operatingMode": "Suspended"}),
        (V1ALPHA1, True, {"replicas": 1}),
        (V1ALPHA1, False, {"replicas": 0}),
    ],
)
def test_operating(version: str, running: bool, fields: dict[str, Any]) -> None:
    assert m.operating(kinds_for(version), running) == fields


@pytest.mark.parametrize(
    ("end_at", "fields"),
    [
        (None, {"shutdownTime": None}),  # a merge patch that clears it
        (0.0, {"shutdownTime": "1970-01-01T00:00:00Z", "shutdownPolicy": "Delete"}),
        (1_800_000_000.7, {"shutdownTime": "2027-01-15T08:00:00Z", "shutdownPolicy": "Delete"}),
    ],
)
def test_expiry(end_at: float | None, fields: dict[str, Any]) -> None:
    assert m.expiry(end_at) == fields


@pytest.mark.parametrize(
    ("claim", "name"),
    [
        ({"status": {"sandbox": {"name": "e2b-x"}}}, "e2b-x"),
        ({"status": {"sandbox": {"Name": "e2b-x"}}}, "e2b-x"),
        ({"status": {"sandbox": {}}}, ""),
        ({"status": {"sandbox": "e2b-x"}}, ""),
        ({"status": None}, ""),
        ({}, ""),
    ],
)
def test_claimed_sandbox_name(claim: dict[str, Any], name: str) -> None:
    assert m.claimed_sandbox_name(claim) == name


@pytest.mark.parametrize(
    ("metadata", "name"),
    [
        ({"name": "e2b-x", "annotations": {m.POD_NAME: "pool-abc"}}, "pool-abc"),
        ({"name": "e2b-x", "annotations": {m.POD_NAME: ""}}, "e2b-x"),
        ({"name": "e2b-x"}, "e2b-x"),
        ({}, ""),
    ],
)
def test_pod_name(metadata: dict[str, Any], name: str) -> None:
    assert m.pod_name({"metadata": metadata}) == name


def _pod(ready: object = "True", ip: str | None = "10.1.2.3", **metadata: object) -> Any:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready}]}
    if ip is not None:
        status["podIP"] = ip
    return {"metadata": metadata, "status": status}


@pytest.mark.parametrize(
    ("pod", "host"),
    [
        (_pod(), "10.1.2.3"),
        (None, ""),
        ({}, ""),
        (_pod(ready="False"), ""),
        (_pod(ready="true"), ""),  # Kubernetes writes "True"; nothing else counts
        (_pod(ready=True), ""),
        (_pod(ip=None), ""),
        (_pod(ip=""), ""),
        (_pod(deletionTimestamp="2027-01-15T08:00:00Z"), ""),  # going away
        ({"status": {"conditions": "Ready", "podIP": "10.1.2.3"}}, ""),
        (
            {
                "status": {
                    "conditions": [{"type": "ContainersReady", "status": "True"}],
                    "podIP": "10.1.2.3",
                }
            },
            "",
        ),
    ],
)
def test_pod_ready(pod: Any, host: str) -> None:
    assert m.pod_ready(pod) == host


def _cr(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Any:
    return {
        "metadata": {
            "name": "e2b-i0abc",
            "namespace": "team-a",
            "creationTimestamp": "2027-01-15T07:00:00Z",
            "labels": m.labels("i0abc", "python") if labels is None else labels,
            "annotations": annotations or {},
        },
        "spec": {
            "podTemplate": {
                "spec": {"containers": [{"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}]}
            }
        },
    }


STARTED = {m.STARTED_AT: "2027-01-15T08:00:00Z", m.END_AT: "2027-01-15T08:05:00Z"}


@pytest.mark.parametrize(
    ("cr", "pod", "expected"),
    [
        # Only our labels make a Sandbox ours.
        (_cr(labels={}), _pod(), None),
        (_cr(labels={m.LABEL_ID: "i0abc"}), _pod(), None),
        (_cr(labels={m.LABEL_ID: "i0abc", m.MANAGED_BY: "someone-else"}), _pod(), None),
        (_cr(labels={m.LABEL_ID: "", m.MANAGED_BY: m.MANAGER}), _pod(), None),
        # State from the annotation and the pod.
        (_cr(STARTED), _pod(), {"state": State.RUNNING, "endpoint_host": "10.1.2.3"}),
        (_cr(STARTED), None, {"state": State.STARTING, "endpoint_host": ""}),
        (_cr(STARTED), _pod(ready="False"), {"state": State.STARTING, "endpoint_host": ""}),
        (
            _cr({**STARTED, m.STATE: "paused"}),
            _pod(),
            {"state": State.PAUSED, "endpoint_host": ""},
        ),
        (_cr({**STARTED, m.STATE: "Paused"}), _pod(), {"state": State.RUNNING}),
        # Times: the annotation, else the object's creation; no end annotation: 0.
        (_cr(STARTED), None, {"started_at": 1_800_000_000.0, "end_at": 1_800_000_300.0}),
        (_cr(), None, {"started_at": 1_799_996_400.0, "end_at": 0.0}),
        (_cr({m.STARTED_AT: "garbage"}), None, {"started_at": 1_799_996_400.0}),
        # Metadata: a JSON object, anything else reads as none.
        (_cr({m.METADATA: '{"k":"v","n":1}'}), None, {"metadata": {"k": "v", "n": "1"}}),
        (_cr({m.METADATA: "not json"}), None, {"metadata": {}}),
        (_cr({m.METADATA: '["k","v"]'}), None, {"metadata": {}}),
        (_cr({m.METADATA: '"k"'}), None, {"metadata": {}}),
        # Lifecycle: only the exact values we write.
        (_cr({m.ON_TIMEOUT: "pause"}), None, {"on_timeout": OnTimeout.PAUSE}),
        (_cr({m.ON_TIMEOUT: "PAUSE"}), None, {"on_timeout": OnTimeout.KILL}),
        (_cr({m.AUTO_RESUME: "true"}), None, {"auto_resume": True}),
        (_cr({m.AUTO_RESUME: "True"}), None, {"auto_resume": False}),
        (_cr({m.AUTO_RESUME: "1"}), None, {"auto_resume": False}),
        # The rest.
        (
            _cr({m.ALIAS: "py"}),
            None,
            {
                "alias": "py",
                "tenant": "team-a",
                "template_id": "python",
                "cpu_count": 2,
                "memory_mb": 1024,
                "env_vars": {},
                "envd_access_token": "tok",
            },
        ),
    ],
)
def test_sandbox_of(cr: dict[str, Any], pod: Any, expected: dict[str, Any] | None) -> None:
    sandbox = m.sandbox_of(cr, pod, "tok")
    if expected is None:
        assert sandbox is None
        return
    assert sandbox is not None
    assert {name: getattr(sandbox, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3600", 3600),
        ("0", DEFAULT),
        ("-5", DEFAULT),
        ("abc", DEFAULT),
        ("1e3", DEFAULT),
        ("", DEFAULT),
        (None, DEFAULT),
    ],
)
def test_max_duration_of(raw: str | None, expected: int) -> None:
    annotations = {} if raw is None else {m.MAX_DURATION: raw}
    assert m.max_duration_of({"metadata": {"annotations": annotations}}, DEFAULT) == expected


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({m.SECRET_ENV_KEY: _b64(b'{"A":"1","B":2}')}, {"A": "1", "B": "2"}),
        ({m.SECRET_ENV_KEY: _b64(b"{}")}, {}),
        ({m.SECRET_ENV_KEY: ""}, {}),
        ({}, {}),
        (None, {}),
        ({m.SECRET_ENV_KEY: "%%%not base64"}, {}),
        ({m.SECRET_ENV_KEY: _b64(b"not json")}, {}),
        ({m.SECRET_ENV_KEY: _b64(b'["A","1"]')}, {}),
        ({m.SECRET_ENV_KEY: _b64(b'"A=1"')}, {}),
        ({m.SECRET_ENV_KEY: _b64(b"\xff\xfe")}, {}),  # not UTF-8
    ],
)
def test_env_vars_of(data: dict[str, str] | None, expected: dict[str, str]) -> None:
    assert m.env_vars_of({"data": data}) == expected


@pytest.mark.parametrize(
    ("on_timeout", "auto_resume", "extra"),
    [
        (OnTimeout.KILL, False, {m.ON_TIMEOUT: "kill"}),
        (OnTimeout.PAUSE, False, {m.ON_TIMEOUT: "pause"}),
        (OnTimeout.PAUSE, True, {m.ON_TIMEOUT: "pause", m.AUTO_RESUME: "true"}),
    ],
)
def test_sandbox_annotations(
    on_timeout: OnTimeout, auto_resume: bool, extra: dict[str, str]
) -> None:
    notes = m.sandbox_annotations(
        started_at=1_800_000_000,
        end_at=1_800_000_300.9,
        metadata={"b": "2", "a": "1"},
        alias="py",
        on_timeout=on_timeout,
        auto_resume=auto_resume,
        token="tok",
        max_duration_s=3600,
    )
    assert notes == {
        m.STARTED_AT: "2027-01-15T08:00:00Z",
        m.END_AT: "2027-01-15T08:05:00Z",
        m.METADATA: '{"a":"1","b":"2"}',
        m.ALIAS: "py",
        m.TOKEN_SHA256: hashlib.sha256(b"tok").hexdigest(),
        m.MAX_DURATION: "3600",
        **extra,
    }
    # the token itself is never in an annotation
    assert "tok" not in json.dumps({k: v for k, v in notes.items() if k != m.TOKEN_SHA256})
