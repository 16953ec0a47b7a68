"""The browser side: neuron viewer and study pages, one FastAPI app."""
