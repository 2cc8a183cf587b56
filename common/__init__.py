"""Shared types and file IO: the bottom layer. Imports nothing else from tarsier."""
