"""Unit tests of libs.jobspec."""
