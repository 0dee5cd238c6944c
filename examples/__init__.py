"""Example federated jobs: training scripts, job specs and client configs (see README.md)."""
