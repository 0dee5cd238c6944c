"""nsfl job_scheduler."""
