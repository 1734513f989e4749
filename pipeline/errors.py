"""Errors the user is meant to read: each names the file or config field at fault."""


class ConfigError(ValueError):
    """A config that cannot run; `field` is the dotted path of the offending entry, or the
    command-line flag (such as '--resume') that set it."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        kind = "flag" if field.startswith("-") else "config field"
        super().__init__(f"{kind} '{field}': {reason}")


class VideoError(ValueError):
    """A video that cannot be used; names the file and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CodecUnsupportedError(VideoError):
    """A GPU whose NVDEC does not decode the file's codec at all (e.g. AV1 on an H200): no fault of
    the file, which PyAV can read. `cause` is the decoding library's own word on it."""

    def __init__(self, path, codec: str, device: str, cause: str):
        self.codec, self.device, self.cause = codec, device, cause
        super().__init__(path, f"NVDEC on {device} does not decode {codec} ({cause}); PyAV "
                               f"does (--decode-backend auto or pyav)")


class SwitchError(ValueError):
    """An environment variable that switches behaviour (FLAVR_*) set to a word it does not take;
    names the variable and the words it takes."""


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model."""


class OutputError(ValueError):
    """A file a command was asked to write that it must not or cannot write there; names it."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LogsError(OSError):
    """The logs folder, or a file in it, cannot be written; names the path."""
