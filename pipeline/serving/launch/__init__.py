"""How a run's processes are started: the launcher interface (base.py) and its implementations,
one module each (local.py: spawned processes on this machine)."""


def launcher_class(name: str):
    """The launcher implementation called `name` (config/CLI: `launcher`)."""
    if name == "local":
        from pipeline.serving.launch.local import LocalLauncher
        return LocalLauncher
    raise ValueError(f"unknown launcher '{name}'; known: {', '.join(LAUNCHERS)}")


LAUNCHERS = ("local",)
