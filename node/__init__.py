"""The broker node: gRPC services, routing, queues and delivery, the composition root."""

import os

# gRPC's C core logs every refused TLS handshake (a plaintext client retrying against a
# TLS node) at info level on stderr, the node's log; errors still show. Set before grpc
# is first imported, which reads it.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
