"""The shop node: configuration, storage, domain and the /api/v1 HTTP API."""
