"""`agentcube-e2b keys create|list|revoke|quota`: manage API keys in `<state-dir>/keys/`, or
with `--kubernetes` in Secret `e2b-api-keys` and ConfigMap `e2b-api-key-config` through the
API. `quota` edits the `quotas` JSON of the local key config (core/quotas.py); on Kubernetes,
edit the ConfigMap's `quotas` key (`kubectl edit configmap e2b-api-key-config`).

A key is shown once, at creation; only its sha256 is stored. The edge picks up every change
within its poll interval, because writes replace whole files by rename; in Kubernetes mode
its informers see each patch as a watch event (extproc/k8s/keywriter.py says how the patches
are shaped so concurrent writers do not clobber each other).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from types import MappingProxyType

from extproc.core.api_keys import (
    KeyEntry,
    KeyIndex,
    KeyStatus,
    hash_api_key,
    is_api_key,
    new_api_key,
    validate_namespace,
)
from extproc.core.errors import DomainError, InvalidArgument, NotFound
from extproc.core.flags import EnvDefaults
from extproc.core.quotas import DEFAULT_ENTRY, parse_quotas
from extproc.edge.keyfiles import read_key_index, write_key_index

TYPE_CHECKING = False
if TYPE_CHECKING:
    from extproc.k8s.keywriter import KeyWriter

# the edge's variables: `keys` and the edge share one state directory
ENV = EnvDefaults("AGENTCUBE_E2B_EDGE_")
HASH_PREFIX_SHOWN = 12
MIN_HASH_PREFIX = 6


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    state_default = ENV.text("STATE_DIR", "./state")

    def with_state_dir(action: argparse.ArgumentParser) -> argparse.ArgumentParser:
        action.add_argument(
            "--state-dir",
            default=state_default,
            metavar="DIR",
            help=f"state directory holding keys/ (default ./state, env {ENV.var('STATE_DIR')})",
        )
        return action

    def with_kubernetes(action: argparse.ArgumentParser) -> argparse.ArgumentParser:
        action.add_argument(
            "--kubernetes",
            action="store_true",
            help="use Secret e2b-api-keys and ConfigMap e2b-api-key-config through the API",
        )
        action.add_argument(
            "--keys-namespace",
            default=ENV.text("KEYS_NAMESPACE", "agentcube-system"),
            metavar="NAMESPACE",
            help="namespace of the two documents (default agentcube-system, "
            f"env {ENV.var('KEYS_NAMESPACE')})",
        )
        action.add_argument(
            "--kubeconfig",
            default=ENV.text("KUBECONFIG", ""),
            metavar="FILE",
            help="kubeconfig (default: in-cluster service account, else ~/.kube/config)",
        )
        return with_state_dir(action)

    create = with_kubernetes(sub.add_parser("create", help="create a key and print it once"))
    create.add_argument(
        "--namespace", default=None, help="tenant of the key (default: defaultNamespace)"
    )
    create.add_argument("--name", default="", help="a label shown by `keys list`")
    create.set_defaults(action=_create, run=run_action)
    listing = with_kubernetes(sub.add_parser("list", help="list keys (hash prefixes, never keys)"))
    listing.set_defaults(action=_list, run=run_action)
    revoke = with_kubernetes(sub.add_parser("revoke", help="revoke a key by key or hash prefix"))
    revoke.add_argument("key", metavar="KEY_OR_HASH_PREFIX")
    revoke.set_defaults(action=_revoke, run=run_action)
    quota = with_state_dir(
        sub.add_parser("quota", help="show or set a namespace's quotas (local key files)")
    )
    quota.add_argument(
        "--namespace", required=True, help=f"the namespace, or {DEFAULT_ENTRY!r} for the rest"
    )
    for flag, text in (
        ("--max-sandboxes", "running + paused sandboxes at once (0: the gateway's max)"),
        ("--creates-per-minute", "sandbox creates per minute"),
        ("--requests-per-second", "platform API requests per second per key"),
    ):
        quota.add_argument(flag, type=int, default=None, metavar="N", help=text)
    quota.set_defaults(action=_quota, run=run_action)


def _keys_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) / "keys"


def _with(index: KeyIndex, entry: KeyEntry) -> KeyIndex:
    entries = dict(index.entries)
    entries[entry.key_hash] = entry
    return dataclasses.replace(index, entries=MappingProxyType(entries))  # keeps the quotas


def find_hash(index: KeyIndex, key_or_prefix: str) -> str:
    """The stored hash a full key or a unique hash prefix names."""
    if is_api_key(key_or_prefix):
        key_hash = hash_api_key(key_or_prefix)
        if key_hash not in index.entries:
            raise NotFound("no such key")
        return key_hash
    prefix = key_or_prefix.lower()
    if len(prefix) < MIN_HASH_PREFIX or any(c not in "0123456789abcdef" for c in prefix):
        raise InvalidArgument(
            f"expected an e2b_ key or at least {MIN_HASH_PREFIX} hex characters of its hash"
        )
    matches = [h for h in index.entries if h.startswith(prefix)]
    if not matches:
        raise NotFound(f"no key hash starts with {prefix}")
    if len(matches) > 1:
        raise InvalidArgument(f"hash prefix {prefix} is ambiguous ({len(matches)} keys match)")
    return matches[0]


def _writer(args: argparse.Namespace) -> KeyWriter:
    from extproc.k8s.client import api_client
    from extproc.k8s.keywriter import KeyWriter
    from extproc.k8s.settings import KeySourceSettings

    namespace = validate_namespace(str(args.keys_namespace))
    client = api_client(Path(args.kubeconfig) if args.kubeconfig else None)
    return KeyWriter(client, KeySourceSettings(namespace=namespace))


def _read_index(args: argparse.Namespace) -> KeyIndex:
    if args.kubernetes:
        return _writer(args).read_index()
    return read_key_index(_keys_dir(args))


def _create(args: argparse.Namespace) -> int:
    key = new_api_key()
    key_hash = hash_api_key(key)
    if args.kubernetes:
        chosen = validate_namespace(args.namespace) if args.namespace else None
        namespace = _writer(args).create(key_hash, chosen, args.name)
    else:
        directory = _keys_dir(args)
        index = read_key_index(directory)
        namespace = (
            validate_namespace(args.namespace) if args.namespace else index.default_namespace
        )
        entry = KeyEntry(key_hash, KeyStatus.VALID, namespace, args.name)
        write_key_index(directory, _with(index, entry))
    print(key)
    print(
        f"namespace {namespace}, hash {key_hash[:HASH_PREFIX_SHOWN]}; "
        "store the key now, it is not shown again",
        file=sys.stderr,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    index = _read_index(args)
    print(f"{'HASH':<{HASH_PREFIX_SHOWN}}  {'STATUS':<8}  {'NAMESPACE':<20}  NAME")
    for entry in sorted(index.entries.values(), key=lambda e: (e.namespace, e.name, e.key_hash)):
        print(
            f"{entry.key_hash[:HASH_PREFIX_SHOWN]}  {entry.status.value:<8}  "
            f"{entry.namespace:<20}  {entry.name}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if args.kubernetes:
        writer = _writer(args)
        key_hash = find_hash(writer.read_index(), args.key)
        writer.set_status(key_hash, KeyStatus.REVOKED)
        print(f"revoked {key_hash[:HASH_PREFIX_SHOWN]}", file=sys.stderr)
        return 0
    directory = _keys_dir(args)
    index = read_key_index(directory)
    key_hash = find_hash(index, args.key)
    entry = index.entries[key_hash]
    revoked = KeyEntry(key_hash, KeyStatus.REVOKED, entry.namespace, entry.name)
    write_key_index(directory, _with(index, revoked))
    print(f"revoked {key_hash[:HASH_PREFIX_SHOWN]}", file=sys.stderr)
    return 0


_QUOTA_FLAGS = {
    "max_sandboxes": "maxSandboxes",
    "creates_per_minute": "createsPerMinute",
    "requests_per_second": "requestsPerSecond",
}


def _quota(args: argparse.Namespace) -> int:
    directory = _keys_dir(args)
    index = read_key_index(directory)
    if index.quotas_error:
        raise InvalidArgument(f"{index.quotas_error}; fix the file by hand first")
    namespace = args.namespace
    if namespace != DEFAULT_ENTRY:
        validate_namespace(namespace)
    changes = {
        field: getattr(args, name) for name, field in _QUOTA_FLAGS.items()
        if getattr(args, name) is not None
    }  # fmt: skip
    if changes:
        document = json.loads(index.quotas_source) if index.quotas_source.strip() else {}
        document.setdefault(namespace, {}).update(changes)
        source = json.dumps(document, sort_keys=True)
        table = parse_quotas(source)  # validates before anything is written
        write_key_index(directory, dataclasses.replace(index, quotas=table, quotas_source=source))
    else:
        table = index.quotas
    effective = table.default if namespace == DEFAULT_ENTRY else table.for_namespace(namespace)
    shown = {field: getattr(effective, name) for name, field in _QUOTA_FLAGS.items()}
    print(f"{namespace}: {json.dumps(shown)}")
    return 0


def run_action(args: argparse.Namespace) -> int:
    """Run the chosen action; domain errors become a message and exit status 1."""
    try:
        code: int = args.action(args)
    except DomainError as error:
        print(f"agentcube-e2b keys: {error.message}", file=sys.stderr)
        return 1
    return code
