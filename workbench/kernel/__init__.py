"""The simulated kernel: one module per kernel concept, named after the file it models."""
