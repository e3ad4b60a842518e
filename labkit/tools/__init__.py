"""Maintainer and set-up tools: the doctor, recording notebooks, the student edition."""
