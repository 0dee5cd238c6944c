"""Federated digits classifier with Keras 3: script mode (train.py), function mode (function.py), data and simulation."""
