"""Code that runs inside the Python kernels, not in the interpreter server.

The server puts this directory itself (not the `extproc` package) on a Python kernel's path
and starts `python -m agentcube_e2b_kernel`: user code sees two modules with unusual names
(`agentcube_e2b_kernel`, `agentcube_e2b_charts`) and nothing of the gateway. They import
only what the kernel's environment has (ipykernel, and matplotlib or pandas when the user's
code has loaded them), never `extproc`. The server imports them through this package only
for their constants.
"""
