"""The local playground: try the whole two-key flow in a browser, with no chat workspace."""
