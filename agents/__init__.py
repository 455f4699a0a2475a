"""MedVR agents."""
