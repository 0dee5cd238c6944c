"""nsfl task_manager."""
