"""The model: its configuration, activations, hook points, loss, named sizes and FLOPs, and
saving and loading a model directory. Imports only the shared helpers and ``kernels``."""
