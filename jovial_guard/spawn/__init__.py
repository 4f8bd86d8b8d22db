"""spawn."""
