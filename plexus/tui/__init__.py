"""`plexus top`: the terminal UI (Textual)."""
