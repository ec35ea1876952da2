"""The scenario library (installed as workbench.library: workbench.testing finds scenarios by name)."""
