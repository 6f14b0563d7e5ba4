"""Logging: structlog to stderr (stdout belongs to the MCP protocol in stdio mode) and to
<home>/logs/conductor.log, because hosts often discard a stdio server's stderr."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

LOG_FILE_BYTES = 10 * 1024 * 1024


def configure_logging(logs_dir: Path | None, level: str = "INFO", *, stderr: bool = True) -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True
            ),
        ],
        foreign_pre_chain=shared,
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)] if stderr else []
    if logs_dir is not None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                logs_dir / "conductor.log", maxBytes=LOG_FILE_BYTES, backupCount=3
            )
        )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    # Per-request transport chatter of the HTTP client is noise in a conductor's log.
    for noisy in ("httpx2", "httpx", "mcp.client.streamable_http"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
