"""nsfl libs."""
