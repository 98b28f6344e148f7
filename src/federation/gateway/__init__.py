"""The central gateway: node registry, federated search, inboxes, gRPC and HTTP surfaces."""
