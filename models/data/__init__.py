"""The committed default chemistry model (default.skops + default.json); see docs/classifier.md."""
