"""Experiments that use the MedVR packages end to end (each in its own folder, with its results and README)."""
