"""Pure pieces every surface shares: no gRPC, Connect, HTTP server or Kubernetes imports."""
