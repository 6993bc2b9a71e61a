"""Local clusters: every region of a cluster as a background node process on this machine.

`state` lays out the state directory and keeps the JSON record of the cluster,
`clusterfile` reads (and copies) cluster files, `default` writes the embedded
default cluster, `launcher` starts, stops and waits for the node processes.
Nothing here imports the node: nodes are started as `python -m node run ...`.
"""
