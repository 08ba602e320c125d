#!/bin/bash
# Starts picod (envd, :49983) and, unless AGENTCUBE_E2B_INTERPRETER=off, the code interpreter
# (:49999) in one sandbox container; exits when either stops, so the pod restarts or fails.
#
# Everything comes from the environment the lifecycle service sets on the Sandbox:
#   PICOD_AUTH_PUBLIC_KEY                the gateway's public key (PEM), as AgentCube's picod
#   AGENTCUBE_E2B_PICOD_SANDBOX_ID       this sandbox's id (JWTs for others are refused)
#   AGENTCUBE_E2B_PICOD_ACCESS_TOKEN     envd's X-Access-Token
#   AGENTCUBE_E2B_PICOD_ENV              the sandbox's envVars, one KEY=VALUE per line
#   AGENTCUBE_E2B_INTERPRETER=off        when the template has no port 49999
# and the interpreter's AGENTCUBE_E2B_INTERPRETER_* twins, defaulted from picod's below.
# A warm-pool pod (SandboxClaim) starts before its sandbox exists and gets only what
# AgentCube's SandboxTemplate sets: no sandbox id, access token or envVars.
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
