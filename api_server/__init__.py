"""nsfl api_server."""
