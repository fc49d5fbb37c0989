"""structlog set-up: one JSON object a line, or a console renderer on a terminal.

Every log event is a constant name with key-value data. A last processor scrubs configured
secrets from every value, as a safety net behind the code's own care never to log them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Redactor:
    """Replaces any configured secret appearing in a string value by ``[redacted]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Very short values would redact innocent text; real secrets are longer.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self.active = bool(self._secrets)

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                for secret in self._secrets:
                    if secret in value:
                        value = value.replace(secret, "[redacted]")
                event[key] = value
        return event


class _FastJson:
    """``add_log_level``, an ISO timestamp and the JSON renderer as one processor.

    The relay logs one ``ingestion_scheduled`` line per event, so rendering is on the hot path:
    structlog's separate processors cost about 11 µs a line, this about half. The output is
    the same: the event's keys, then ``event``, ``level`` and ``timestamp`` (UTC, µs).
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"

    def __call__(self, _logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        event["level"] = _LEVEL_ALIASES.get(name, name)
        event["timestamp"] = self._timestamp()
        return orjson.dumps(event, default=str).decode()


# What structlog.processors.add_log_level reports for these method names.
_LEVEL_ALIASES = {"warn": "warning", "exception": "error"}


class _Batched:
    """What :func:`log_batch` needs to write lines the way the configured chain would."""

    def __init__(
        self,
        min_level: int,
        redactor: _Redactor,
        renderer: _FastJson,
        wrapper_class: Any,
        stream: Any,
    ) -> None:
        self.min_level = min_level
        self.redactor = redactor
        self.renderer = renderer
        self.wrapper_class = wrapper_class
        # One write for a batch's lines: print() would write its newline separately once the
        # lines outgrow the stream's buffer (a few kilobytes). Same per-file lock as the logger.
        self.writer = structlog.WriteLogger(file=stream)


# Set by configure_logging in JSON mode; None otherwise (console, or never configured).
_batched: _Batched | None = None


def log_batch(logger: Any, level: str, event: str, records: list[dict[str, Any]]) -> None:
    """Logs one ``event`` line per record, exactly as ``logger.<level>(event, **record)`` would.

    The relay logs one ``ingestion_scheduled`` line per event. In JSON mode (production) the
    lines of a batch are rendered here in one pass (the same processors, inlined: context
    variables, redaction of configured secrets, level, timestamp, JSON) and written with one
    call; otherwise (a console, ``structlog.testing.capture_logs``, another configuration) each
    record goes through ``logger`` as usual. The records are consumed (the dicts are changed).
    """
    fast = _batched
    if not records:
        return
    config = structlog.get_config()
    processors = config["processors"]
    if (
        fast is None
        or not processors
        or processors[-1] is not fast.renderer
        or config["wrapper_class"] is not fast.wrapper_class
    ):
        method = getattr(logger, level)
        for record in records:
            method(event, **record)
        return
    if _LEVELS[_LEVEL_ALIASES.get(level, level)] < fast.min_level:
        return
    context = structlog.contextvars.get_contextvars()
    redact = fast.redactor if fast.redactor.active else None
    render = fast.renderer
    lines = []
    for record in records:
        record["event"] = event
        for key, value in context.items():
            record.setdefault(key, value)
        if redact is not None:
            redact(None, level, record)
        lines.append(render(None, level, record))
    fast.writer.msg("\n".join(lines))


def configure_logging(
    level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (), stream: Any = None
) -> None:
    """Configures structlog for the process; safe to call more than once."""
    stream = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    global _batched  # one logging configuration per process, as structlog's
    redactor = _Redactor(secrets)
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    _batched = None
    if use_console:
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            structlog.dev.ConsoleRenderer(colors=stream.isatty()),
        ]
    else:
        processors += [structlog.processors.format_exc_info]
        if redactor.active:
            processors.append(redactor)
        renderer = _FastJson()
        processors.append(renderer)
    wrapper_class = structlog.make_filtering_bound_logger(_LEVELS[level])
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper_class,
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    if not use_console:
        _batched = _Batched(_LEVELS[level], redactor, renderer, wrapper_class, stream)
    # Libraries that use the standard logging module (aiohttp, asyncpg) go to stderr.
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), stream=sys.stderr)
