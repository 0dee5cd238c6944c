"""Tests of the client selector."""
