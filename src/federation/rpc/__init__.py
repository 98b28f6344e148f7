"""gRPC plumbing shared by the gateway and the node agent: status mapping, the call
guard (authentication, authorisation, metrics, logging), channel options, the client
channel that follows a rotated certificate, and the conversions between protobuf
messages and domain records."""
