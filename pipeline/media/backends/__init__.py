"""Decode backends, looked up by name. Each is one module here implementing
`base.DecodeBackend`, plus one line below (module:class, imported only when chosen, so DALI
loads only where it is used)."""
from __future__ import annotations

from importlib import import_module

REGISTRY = {
    "dali-gpu": "pipeline.media.backends.dali:DaliGpuBackend",
    "dali-cpu": "pipeline.media.backends.dali:DaliCpuBackend",
    "pyav": "pipeline.media.backends.pyav:PyAvBackend",
    "pynvvideocodec": "pipeline.media.backends.pynvc:PyNvVideoCodecBackend",
}
BACKENDS = tuple(REGISTRY)


def backend_class(name: str):
    """The DecodeBackend subclass registered as `name`."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend '{name}' (choose from auto, {', '.join(BACKENDS)})")
    module, cls = REGISTRY[name].split(":")
    return getattr(import_module(module), cls)
