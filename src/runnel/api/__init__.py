"""The HTTP layer: routing, validation, auth, SSE responses, error mapping. Nothing imports it
but the entry points."""
