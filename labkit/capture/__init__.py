"""Capturing what crossed the wire (live, replayed or recorded) and following TCP."""
