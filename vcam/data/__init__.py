"""Talking-head clips: reading sources, preprocessing them and reading the result."""
