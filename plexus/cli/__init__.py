"""The `plexus` command line: node, pub, sub, queue and info commands."""
