"""Generated protobuf and RPC stubs. Do not edit: run `make generate`."""
