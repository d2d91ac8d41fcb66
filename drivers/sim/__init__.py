"""Simulated hardware serving the same protocols as the real devices."""
