"""nsfl coordinator."""
