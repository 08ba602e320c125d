"""The lifecycle service: sandboxes and templates behind one gRPC contract."""
