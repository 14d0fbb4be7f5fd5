"""Running cases: bind (a phase as a public, timed callable), case (one row), sweep (a grid)."""
