"""realcam tests (a regular package, so `from tests...` never resolves to another distribution's top-level `tests`)."""
