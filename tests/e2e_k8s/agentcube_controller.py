"""AgentCube's CodeInterpreter controller (its workload manager), as the AgentCube facts describe
it (pkg/workloadmanager/codeinterpreter_controller.go upstream).

For a CodeInterpreter with `warmPoolSize > 0` it keeps a SandboxTemplate and a SandboxWarmPool
named after it, in its namespace, owned by it, once it has the router's public key: the
`public.pem` of the Secret `picod-router-identity` in AgentCube's own namespace (`agentcube` in
its getting-started). Without that Secret it makes nothing and tries again every `retry_s`
(5 s upstream); once read, the key is cached for good (a later key change does not reach new
pods either, as upstream). The key is needed whatever the authMode (upstream checks its cache
first); only with `authMode` other than `none` does it go into the pod, as the literal env var
`PICOD_AUTH_PUBLIC_KEY` (not a secretKeyRef).

The template's single container is named `codeinterpreter` and has the CodeInterpreter's
image, pull policy, command, args, resources, env (`template.environment`) and its ports as
container ports; labels, annotations, imagePullSecrets and runtimeClassName go on the pod.
The pool's replicas are `warmPoolSize`; at 0 or absent both objects are deleted. The objects are
written in the API's storage version (v1beta1 on agent-sandbox 0.5.x: upstream writes v1alpha1
and the API converts; template and pool are the same in both versions). The CodeInterpreter's
status gets `ready: true` and condition Ready.
"""

from __future__ import annotations

import base64
import binascii
import copy

from e2e_k8s.objects import (
    Key,
    Obj,
    Store,
    controller_of,
    get,
    key_of,
    new_uid,
    owned_by,
    owner_reference,
    remove,
    with_condition,
    write,
)
from e2e_k8s.reconciling import Controller, Mapper
from e2e_k8s.versions import AgentSandbox

IDENTITY_SECRET = "picod-router-identity"
PUBLIC_KEY_ENV = "PICOD_AUTH_PUBLIC_KEY"
CONTAINER = "codeinterpreter"
CODE_INTERPRETER_API = "runtime.agentcube.volcano.sh/v1alpha1"
TEMPLATES, POOLS = "sandboxtemplates", "sandboxwarmpools"
RETRY_S = 5.0


class CodeInterpreterController(Controller):
    plural = "codeinterpreters"

    def __init__(
        self,
        api: Store,
        delay_s: float,
        release: AgentSandbox,
        namespace: str = "agentcube",
        retry_s: float = RETRY_S,
    ) -> None:
        super().__init__(api, delay_s)
        self.release = release
        self.namespace = namespace
        self.retry_s = retry_s
        self._public_key: str | None = None

    def watches(self) -> dict[str, Mapper]:
        # Someone deleting or changing our template or pool: put it back.
        def owner(obj: Obj) -> list[Key]:
            ref = controller_of(obj) or {}
            if ref.get("kind") != "CodeInterpreter":
                return []
            return [(key_of(obj)[0], str(ref.get("name")))]

        return {TEMPLATES: owner, POOLS: owner}

    def public_key(self) -> str | None:
        """public.pem of AgentCube's identity Secret, cached once read."""
        if self._public_key is None:
            secret = get(self.api, "secrets", self.namespace, IDENTITY_SECRET) or {}
            encoded = (secret.get("data") or {}).get("public.pem")
            if encoded is not None:
                try:
                    self._public_key = base64.b64decode(encoded, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    where = f"{self.namespace}/{IDENTITY_SECRET}"
                    self.log.warning("%s: public.pem is not base64 PEM", where)
        return self._public_key

    def reconcile(self, key: Key) -> None:
        interpreter = get(self.api, self.plural, *key)
        if interpreter is None:
            return  # the garbage collector deletes its template and pool
        spec = interpreter.get("spec") or {}
        size = int(spec.get("warmPoolSize") or 0)
        if size <= 0:
            for plural in (POOLS, TEMPLATES):
                current = get(self.api, plural, *key)
                if current is not None and owned_by(current, interpreter):
                    remove(self.api, plural, *key)
            return
        public_key = self.public_key()
        if public_key is None:
            where = f"{self.namespace}/{IDENTITY_SECRET}"
            self.log.info("codeinterpreter %s/%s: no %s yet, retrying", *key, where)
            self.requeue_after(key, self.retry_s)
            return
        pool_spec = {"replicas": size, "sandboxTemplateRef": {"name": key[1]}}
        for plural, wanted in (
            (TEMPLATES, self._template_spec(interpreter, public_key)),
            (POOLS, pool_spec),
        ):
            current = get(self.api, plural, *key)
            if current is not None and not owned_by(current, interpreter):
                # assumption: upstream leaves an object it does not own alone
                self.log.warning("%s %s/%s exists and is not ours", plural, *key)
                continue
            write(self.api, plural, self._object(plural, interpreter, current, wanted))
        status = with_condition(dict(interpreter.get("status") or {}), "Ready", True, "WarmPool")
        status["ready"] = True
        interpreter["status"] = status
        write(self.api, self.plural, interpreter)

    def _object(self, plural: str, interpreter: Obj, current: Obj | None, spec: Obj) -> Obj:
        """The object of `plural` named after the interpreter, with `spec`: the stored one
        updated (its uid, status and other metadata kept) or a new one."""
        namespace, name = key_of(interpreter)
        if current is None:
            owner = owner_reference(interpreter, CODE_INTERPRETER_API, "CodeInterpreter")
            kind = "SandboxTemplate" if plural == TEMPLATES else "SandboxWarmPool"
            metadata = {"name": name, "namespace": namespace, "uid": new_uid()}
            current = {"apiVersion": self.release.extensions_api_version, "kind": kind}
            current["metadata"] = {**metadata, "ownerReferences": [owner]}
        current["spec"] = spec
        return current

    def _template_spec(self, interpreter: Obj, public_key: str) -> Obj:
        spec = interpreter.get("spec") or {}
        source = spec.get("template") or {}
        env = [copy.deepcopy(e) for e in source.get("environment") or [] if isinstance(e, dict)]
        if spec.get("authMode", "picod") != "none":
            env = [e for e in env if e.get("name") != PUBLIC_KEY_ENV]
            env.append({"name": PUBLIC_KEY_ENV, "value": public_key})
        container: Obj = {"name": CONTAINER, "image": source.get("image", "")}
        for field in ("imagePullPolicy", "command", "args", "resources"):
            if source.get(field):
                container[field] = copy.deepcopy(source[field])
        container["env"] = env
        ports = []
        for port in spec.get("ports") or []:
            entry: Obj = {"containerPort": int(port["port"]), "protocol": "TCP"}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
        if ports:
            container["ports"] = ports
        pod_spec: Obj = {"containers": [container]}
        for field in ("imagePullSecrets", "runtimeClassName"):
            if source.get(field):
                pod_spec[field] = copy.deepcopy(source[field])
        metadata: Obj = {}
        for field in ("labels", "annotations"):
            if source.get(field):
                metadata[field] = dict(source[field])
        return {"podTemplate": {"metadata": metadata, "spec": pod_spec}}
