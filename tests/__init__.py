"""realcam's test suite (a package, so `tests.*` imports resolve here and not to a stray top-level `tests` that some
third-party wheels install into site-packages)."""
