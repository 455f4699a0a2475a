"""Fixture writers, one per public dataset, each in that dataset's official layout (see dataset_fixtures)."""

from __future__ import annotations
