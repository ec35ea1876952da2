"""The OOM workbench: Linux's OOM killer and OOM reaper in a simulated kernel."""

__version__ = "0.1.0"
