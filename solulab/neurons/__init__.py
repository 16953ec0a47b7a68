"""Neuron collection, the neuron store and direct logit effects."""
