"""Chemistry decisions from spectra and passports; no hardware knowledge."""
