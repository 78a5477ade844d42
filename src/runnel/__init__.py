"""Runnel: a self-hostable chat server that streams LLM replies over Server-Sent Events."""

__version__ = "0.1.0"
