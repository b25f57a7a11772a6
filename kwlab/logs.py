"""kwlab's ``logging`` logger: ``logging.getLogger("kwlab")`` (children: ``kwlab.train``, ``kwlab.sweep``).

Notes and warnings of the trainer and the sweeps (the resolved ``arch`` builder, a short anneal, an
instrument that does not apply) are log records, at INFO and WARNING. So that a notebook or a script sees
them as before, the ``kwlab`` logger carries one handler, :class:`StderrHandler`, that writes each record as
one line ``kwlab: <message>`` (``kwlab: warning: <message>`` for warnings) to the *current* ``sys.stderr``;
while it is installed the logger does not propagate (no line twice under an application's own logging
config). ``kwlab`` (the CLI) installs it explicitly.

To route kwlab's records into your own logging (a file, Lightning's or Hydra's config):
``kwlab.logs.use_root_logging()`` removes the handler and lets records propagate to the root logger;
``install_stderr_handler()`` brings it back.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["logger", "get_logger", "StderrHandler", "install_stderr_handler", "use_root_logging"]

logger = logging.getLogger("kwlab")


class StderrHandler(logging.Handler):
    """One line per record on the current ``sys.stderr``: ``kwlab: [warning: ]<message>``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            sys.stderr.write(f"kwlab: {level}{record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def get_logger(name: str = "") -> logging.Logger:
    """``kwlab`` or one of its children (``get_logger("train")`` is ``kwlab.train``)."""
    return logger.getChild(name) if name else logger


def install_stderr_handler(level: int = logging.INFO) -> StderrHandler:
    """Install (once) the handler that writes kwlab's records to stderr; the logger stops propagating."""
    for h in logger.handlers:
        if isinstance(h, StderrHandler):
            return h
    handler = StderrHandler(level)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    logger.propagate = False
    return handler


def use_root_logging() -> None:
    """Remove kwlab's stderr handler and let its records propagate to the root logger (your config)."""
    for h in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(h)
    logger.propagate = True


install_stderr_handler()
