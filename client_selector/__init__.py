"""nsfl client_selector."""
