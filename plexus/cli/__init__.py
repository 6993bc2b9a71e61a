"""The `plexus` command line: node, pub, sub, queue and info commands."""

import os

# gRPC's C core would also print a failed TLS handshake on stderr (read when grpc is first
# imported, so set here): the command's one-line error says it already.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
