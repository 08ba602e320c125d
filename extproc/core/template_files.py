"""The path of template build file uploads, shared by Envoy's route and the lifecycle's
upload server (lifecycle/uploads.py): `PATH_PREFIX<tenant key>/<hash>?expires=&signature=`."""

from __future__ import annotations

PATH_PREFIX = "/_agentcube/template-files/"
QUERY_PARAMETERS = ("expires", "signature")
