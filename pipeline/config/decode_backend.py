"""Whether a decoder forced with --decode-backend (env FLAVR_DECODE_BACKEND) can decode a run's
clips at all, checked before anything starts: otherwise every request fails in the decode step
and the run still writes its folder.

Only what is certain to fail is refused: the device type the decode workers will have (a CPU run
for a GPU-only decoder), the codec of a synthetic set (known up front; clip files are probed
later, one by one), and a library that does not import where the workers will run. "auto" is
never refused: it picks per device and codec (pipeline/media/decode.py).
"""
from __future__ import annotations

import os

from pipeline.config.schema import RunSettings
from pipeline.errors import ConfigError

FLAG = "--decode-backend"
ENV = "FLAVR_DECODE_BACKEND"


def check_decode_backend(backend: str, device_kind: str | None, cfg=None,
                         local: bool = False, why_cpu: str = "") -> None:
    """ConfigError naming the flag when `backend` cannot decode this run's clips.

    device_kind: "cpu" or "cuda" where the run's device is decided, None where it is not yet;
    cfg: the run config, for the codec of a synthetic set (None: not known); local: the decode
    workers run on this machine (the local launcher), so a library that does not import here
    cannot decode there either (a Ray node may have what this machine lacks); why_cpu: how the
    run came to be on the CPU, for the message."""
    if backend == "auto":
        return
    from pipeline.media.backends import backend_class

    cls = backend_class(backend)
    if device_kind is not None and device_kind not in cls.devices:
        others = [n for n in _names() if device_kind in backend_class(n).devices]
        where = "GPUs (NVDEC)" if cls.devices == ("cuda",) else " or ".join(cls.devices)
        raise ConfigError(FLAG, f"{backend}{_source(backend)} decodes onto {where} only, and "
                                f"this run's decode workers are on the {device_kind.upper()}"
                                f"{f' ({why_cpu})' if why_cpu else ''}; use auto or "
                                f"{' or '.join(others)}")
    synthetic = cfg.videos.synthetic if cfg is not None else None
    if synthetic is not None and synthetic.codec not in cls.codecs:
        takes = [n for n in _names() if synthetic.codec in backend_class(n).codecs
                 and (device_kind is None or device_kind in backend_class(n).devices)]
        raise ConfigError(FLAG, f"{backend}{_source(backend)} decodes {', '.join(cls.codecs)}, "
                                f"and the clips are {synthetic.codec} (videos.synthetic.codec); "
                                f"use auto or {' or '.join(takes)}")
    missing = cls.unavailable() if local else None
    if missing:
        raise ConfigError(FLAG, f"{backend}{_source(backend)} cannot run on this machine: its "
                                f"library does not import ({missing}); use auto")


def check_forced_backend(settings: RunSettings) -> None:
    """What can be told from the settings and the machine alone, before the config is read:
    a GPU-only decoder for a run that is certain to be on the CPU (--device cpu, or no GPU here,
    as pipeline/serving/plan.py decides the device)."""
    if settings.decode_backend == "auto" or settings.device == "cuda":
        return  # cuda without a GPU is refused for its own reason
    if settings.device == "cpu":
        check_decode_backend(settings.decode_backend, "cpu", why_cpu="--device cpu")
        return
    from pipeline.media.backends import backend_class

    if "cpu" in backend_class(settings.decode_backend).devices:
        return  # no need to ask the machine
    from pipeline.serving.gpu_monitor import gpu_count_nvml

    if not gpu_count_nvml():
        check_decode_backend(settings.decode_backend, "cpu", why_cpu="this machine has no GPU")


def _names() -> list[str]:
    from pipeline.media.backends import BACKENDS

    return list(BACKENDS)


def _source(backend: str) -> str:
    """Where the value came from, when the environment set it."""
    return f" (from {ENV})" if os.environ.get(ENV) == backend else ""
