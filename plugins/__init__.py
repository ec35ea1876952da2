"""The built-in plugins (installed as workbench.plugins): the patch's policies and presets."""
