"""Models the serving pipeline can run, each in its own folder."""
