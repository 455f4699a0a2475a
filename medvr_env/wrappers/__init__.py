"""Wrappers over MedVRVQAEnv."""

from .text_actions import TextActions

__all__ = ["TextActions"]
