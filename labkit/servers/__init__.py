"""Servers the lessons talk to: one lifecycle, loopback only."""
