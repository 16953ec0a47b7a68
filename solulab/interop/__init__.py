"""Models from and for other tools: TransformerLens checkpoints and the Hugging Face cache."""
