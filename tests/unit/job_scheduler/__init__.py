"""Unit tests of job_scheduler."""
