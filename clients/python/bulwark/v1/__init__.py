"""Generated protobuf and gRPC code for package bulwark.v1 (made by `make proto`)."""
