"""Data build: sources, SIF trajectories, records and their checks."""
