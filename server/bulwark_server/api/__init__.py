"""gRPC servicers: validate the request, call the capability, map the error, fill the response."""
