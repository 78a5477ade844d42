"""Model providers: one small interface (``base.py``), a registry, and the built-ins."""
