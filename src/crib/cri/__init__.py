"""The gRPC adapter: servicers that validate, make one domain call and convert the result."""
