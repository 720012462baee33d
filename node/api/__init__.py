"""The /api/v1 HTTP layer: parses, authorizes, calls the domain, renders."""
