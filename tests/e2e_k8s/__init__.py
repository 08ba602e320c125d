"""End-to-end tests of the gateway in Kubernetes mode against a fake cluster (conftest.py)."""
