"""Operator and engineer web view (FastAPI)."""
