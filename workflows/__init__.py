"""Workflows: stored, versioned graphs run by workers (see the workflows issue)."""
