"""slimgate benchmarks: scripts that print figures (never timed unit tests)."""
