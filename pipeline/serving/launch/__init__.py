"""How a run's processes are started: the launcher interface (base.py) and its implementations,
one module each (local.py: child processes on this machine; ray_actors.py: Ray actors on a
cluster, or on a Ray instance of this machine)."""


def launcher_class(name: str):
    """The launcher implementation called `name` (config/CLI: `launcher`)."""
    if name == "local":
        from pipeline.serving.launch.local import LocalLauncher
        return LocalLauncher
    if name == "ray":
        try:
            from pipeline.serving.launch.ray_actors import RayLauncher
        except ModuleNotFoundError as exc:
            if exc.name != "ray":
                raise
            raise RuntimeError("launcher 'ray' needs Ray: pip install 'ray==2.60.0' (or the "
                               "project's extra: pip install -e '.[ray]')") from None
        return RayLauncher
    raise ValueError(f"unknown launcher '{name}'; known: {', '.join(LAUNCHERS)}")


def make_launcher(name: str, ray_address: str | None = None):
    """A launcher for one run; `ray_address` joins an existing Ray cluster (ray only)."""
    cls = launcher_class(name)
    return cls(address=ray_address) if name == "ray" else cls()


def launcher_for_run(name: str, flag_address: str | None, config_address: str | None):
    """make_launcher for a run (--ray-address over ray.address). A launcher that cannot start
    raises a ConfigError naming what it is about: the cluster address when one was given and
    could not be joined; otherwise the launcher choice (Ray not installed)."""
    from pipeline.errors import ConfigError
    from pipeline.serving.launch.base import LaunchError

    try:
        return make_launcher(name, flag_address or config_address)
    except (LaunchError, RuntimeError) as exc:  # Ray missing, or its cluster out of reach
        field = "launcher"
        if isinstance(exc, LaunchError) and (flag_address or config_address):
            field = "--ray-address" if flag_address else "ray.address"
        raise ConfigError(field, str(exc)) from None


def check_launcher_flags(cfg, settings) -> None:
    """ConfigError for a cluster address the run's launcher would ignore: --ray-address with the
    local launcher (the config's, or --launcher local) would run here, not on the cluster."""
    from pipeline.errors import ConfigError

    launcher = settings.launcher or cfg.launcher
    if settings.ray_address and launcher != "ray":
        chosen = ("--launcher local" if settings.launcher
                  else f"the config's launcher: {cfg.launcher}")
        raise ConfigError("--ray-address", f"joins a Ray cluster, but {chosen} runs every "
                                           "process on this machine; add --launcher ray, or "
                                           "leave --ray-address out")


def named_nodes(cfg) -> dict[str, str]:
    """Node -> the first config field that names it ("pipeline[2].gpus[0]"), for
    Launcher.check_nodes."""
    from pipeline.config.schema import split_gpu

    nodes: dict[str, str] = {}
    for i, step in enumerate(cfg.steps):
        for j, entry in enumerate(step.gpus):
            node, _ = split_gpu(entry)
            if node is not None:
                nodes.setdefault(node, f"pipeline[{i}].gpus[{j}]")
    return nodes


LAUNCHERS = ("local", "ray")
