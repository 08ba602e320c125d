#!/bin/bash
# Starts picod (envd, :49983) and, unless AGENTCUBE_E2B_INTERPRETER=off, the code interpreter
# (:49999) in one sandbox container; exits when either stops, so the pod restarts or fails.
#
# Everything comes from the environment the lifecycle service sets on a cold Sandbox:
#   PICOD_AUTH_PUBLIC_KEY                the public key of AgentCube's router identity (PEM),
#                                        as AgentCube's picod; absent with authMode none
#   AGENTCUBE_E2B_PICOD_SANDBOX_ID       this sandbox's id (JWTs for others are refused)
#   AGENTCUBE_E2B_PICOD_ACCESS_TOKEN     envd's X-Access-Token   } from the sandbox's own
#   AGENTCUBE_E2B_PICOD_ENV_JSON         the sandbox's envVars   } Secret (secretKeyRef)
#   AGENTCUBE_E2B_INTERPRETER=off        when the template has no port 49999
# and the interpreter's AGENTCUBE_E2B_INTERPRETER_* twins, defaulted from picod's below.
# A warm-pool pod (SandboxClaim) starts before its sandbox exists and gets only what
# AgentCube's SandboxTemplate sets (the public key, the CodeInterpreter's env): no sandbox
# id, access token or envVars. The lifecycle service binds its picod to the sandbox through
# picod's POST /init once the claim has it; picod keeps that binding in binding.json in its
# state directory, and the interpreter, which has no /init, learns it from that file
# (--binding-file) and refuses everything but /health until then:
#   AGENTCUBE_E2B_PICOD_STATE_DIR        picod's state directory; default /run/agentcube-e2b
#                                        (made for uid 1000 in the image), else a private
#                                        temporary one when that is not writable. Set it
#                                        under a volume for the binding to outlive the
#                                        container.
#   AGENTCUBE_E2B_INTERPRETER_BINDING_FILE  default $AGENTCUBE_E2B_PICOD_STATE_DIR/binding.json
set -euo pipefail

bin=/opt/agentcube-e2b/venv/bin/agentcube-e2b

# the interpreter reads the key from a file, picod also from the environment
if [[ -n "${PICOD_AUTH_PUBLIC_KEY:-}" && -z "${AGENTCUBE_E2B_INTERPRETER_JWT_PUBLIC_KEY:-}" ]]; then
    key_file="$(mktemp -t gateway-key.XXXXXX.pem)"
    printf '%s\n' "$PICOD_AUTH_PUBLIC_KEY" > "$key_file"
    export AGENTCUBE_E2B_INTERPRETER_JWT_PUBLIC_KEY="$key_file"
fi
if [[ -z "${AGENTCUBE_E2B_INTERPRETER_SANDBOX_ID:-}" && -n "${AGENTCUBE_E2B_PICOD_SANDBOX_ID:-}" ]]; then
    export AGENTCUBE_E2B_INTERPRETER_SANDBOX_ID="$AGENTCUBE_E2B_PICOD_SANDBOX_ID"
fi
if [[ -z "${AGENTCUBE_E2B_INTERPRETER_ACCESS_TOKEN:-}" && -n "${AGENTCUBE_E2B_PICOD_ACCESS_TOKEN:-}" ]]; then
    export AGENTCUBE_E2B_INTERPRETER_ACCESS_TOKEN="$AGENTCUBE_E2B_PICOD_ACCESS_TOKEN"
fi

# Both processes must name the same file: decided here, once, for both.
if [[ -z "${AGENTCUBE_E2B_PICOD_STATE_DIR:-}" ]]; then
    AGENTCUBE_E2B_PICOD_STATE_DIR=/run/agentcube-e2b
    if [[ ! -w "$AGENTCUBE_E2B_PICOD_STATE_DIR" ]]; then
        # the pod runs as another user than the image's (or /run is a fresh tmpfs)
        AGENTCUBE_E2B_PICOD_STATE_DIR="$(mktemp -d -t agentcube-e2b.XXXXXX)"
    fi
fi
export AGENTCUBE_E2B_PICOD_STATE_DIR
# binding.json: the file name picod gives it (extproc/core/binding_file.py, FILE_NAME)
if [[ -z "${AGENTCUBE_E2B_INTERPRETER_BINDING_FILE:-}" ]]; then
    export AGENTCUBE_E2B_INTERPRETER_BINDING_FILE="$AGENTCUBE_E2B_PICOD_STATE_DIR/binding.json"
fi

"$bin" picod --listen 0.0.0.0:49983 --user user --home /home/user &
if [[ "${AGENTCUBE_E2B_INTERPRETER:-on}" != off ]]; then
    "$bin" interpreter --listen 0.0.0.0:49999 --envd-url http://127.0.0.1:49983 \
        --cwd /home/user &
fi

trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
wait -n
status=$?
kill -TERM $(jobs -p) 2>/dev/null || true
wait
exit "$status"
