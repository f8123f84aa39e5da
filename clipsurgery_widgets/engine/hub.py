"""Talking to the weights hub briefly and quietly: an offline machine fails fast with one message."""
from __future__ import annotations

import contextlib
import logging
import os
import threading

from .checkpoints import first_line


def weights_cache_dir() -> str:
    """Where open_clip/huggingface_hub keep downloaded weights on this machine."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.path.expanduser("~/.cache/huggingface/hub")


class _QuietThread(logging.Filter):
    """Drops records below ERROR logged by one thread; every other thread logs as before."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread or record.levelno >= logging.ERROR


@contextlib.contextmanager
def _hub_logs_silenced():
    """open_clip and huggingface_hub log each failed attempt; our one error says it all.

    Levels and ``logging.disable`` stay as they are (other threads and the caller's logging are
    not affected): a filter on the handlers drops only this thread's records below ERROR.
    """
    quiet = _QuietThread()
    loggers = [logging.root] + [lg for lg in list(logging.root.manager.loggerDict.values())
                                if isinstance(lg, logging.Logger)]
    handlers = {id(h): h for lg in loggers for h in lg.handlers}
    if logging.lastResort is not None:
        handlers[id(logging.lastResort)] = logging.lastResort
    for handler in handlers.values():
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers.values():
            handler.removeFilter(quiet)


@contextlib.contextmanager
def _hub_offline(offline: bool):
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _weights_host_reachable(name: str, pretrained: str | None, timeout: float = 3.0) -> bool:
    """Whether the host serving these weights accepts a TCP connection within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlparse

    import open_clip
    from huggingface_hub import constants

    if pretrained is None or constants.HF_HUB_OFFLINE:
        return True  # nothing to download, or offline already: no probe needed
    cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    url = cfg.get("url") if not cfg.get("hf_hub") else os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(url or "https://huggingface.co")
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download_problem(exc: BaseException) -> str:
    text = str(exc)
    offline_signs = ("offline", "Name or service not known", "cannot find the requested files", "connection",
                     "Connection", "Max retries", "timed out", "Temporary failure in name resolution")
    if any(sign in text for sign in offline_signs):
        return "the weights are not in the local cache and could not be downloaded (this machine looks offline)"
    return first_line(exc)
