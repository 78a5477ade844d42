"""Persistence of conversations and messages (SQLAlchemy 2 async; SQLite or PostgreSQL)."""
