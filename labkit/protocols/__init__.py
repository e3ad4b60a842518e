"""What labkit knows about each protocol it names on the wire."""
