"""The CustomResourceDefinitions the fake API (tests/support/kubeapi.py) serves, as YAML files
next to this module, one file per installable release: `load_crds("agent-sandbox-v0.4.6",
"agentcube")` returns their CRD documents in file order, ready for `FakeApi.install_crd`.

Written from the upstream facts (see each file's header), not copied from upstream, so a
test that passes against them says our objects have the shape the real CRDs demand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; not worth a dependency

HERE = Path(__file__).parent
RELEASES = ("agent-sandbox-v0.4.6", "agent-sandbox-v0.5.6", "agentcube")


def load_crds(*names: str) -> list[dict[str, Any]]:
    """The CRDs of each named release, in order. A JSON round trip gives every call its own
    plain dicts: YAML anchors would otherwise share one dict between two versions."""
    crds: list[dict[str, Any]] = []
    for name in names:
        path = HERE / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"no CRD file {name!r}: one of {', '.join(RELEASES)}")
        with path.open() as stream:
            documents = [doc for doc in yaml.safe_load_all(stream) if doc]
        crds.extend(json.loads(json.dumps(documents)))
    return crds
