"""Benchmarks of fleetscan and its emulator: ``make bench`` runs ``python -m benchmarks``."""
