"""Process control and sorting for a lithium-ion battery recycling plant."""

__version__ = "0.1.0"
