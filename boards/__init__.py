"""One data file per Jetson board (not built yet)."""
