"""The screens of `plexus top`: topology, region, events, and the dialogs over them."""
