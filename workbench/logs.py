"""Quieting other libraries' advice for the length of a call."""

from __future__ import annotations

import logging
from contextlib import contextmanager


@contextmanager
def muted(logger_name: str | None = None, level: int = logging.ERROR):
    """Raise `logger_name`'s level (None: the root logger) while the block runs, then restore it."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
