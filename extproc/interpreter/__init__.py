"""The code interpreter inside a code-interpreter sandbox: E2B's `:49999` API (`/execute`
streaming NDJSON, `/contexts`) on Jupyter kernels driven through jupyter_client."""
