"""The commands: one module per console script (see pyproject.toml)."""
