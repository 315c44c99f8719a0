"""Helpers that several test files use, each in a module of its own (conftest.py holds fixtures)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
