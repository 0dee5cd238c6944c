"""nsfl task_executor."""
