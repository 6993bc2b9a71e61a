"""Plexus client side: the SDK (`plexus.Client`), the CLI and the shared contract.

`plexus.v1` is the generated wire contract, `plexus.topics` the topic grammar
and `plexus.errors` the error taxonomy; every layer may import those three.
The rest of this package talks to nodes only over gRPC.
"""

__version__ = "0.1.0"
