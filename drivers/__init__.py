"""Hardware drivers: protocols and devices, no recycling knowledge."""
