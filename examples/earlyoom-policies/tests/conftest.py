# The workbench's pytest plugin: fixtures workbench_run and workbench_conformance.
pytest_plugins = ["workbench.testing"]
