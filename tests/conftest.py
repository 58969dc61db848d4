"""Shared pytest configuration. Engine test helpers live in tests/streams.py."""
