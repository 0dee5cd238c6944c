"""Federated digits classifier with PyTorch: script mode (train.py), function mode (function.py), data and simulation."""
