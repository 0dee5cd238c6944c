"""nsfl nsfl_ctl."""
