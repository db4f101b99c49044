"""Logging: loguru for everything, stdlib loggers (rq, urllib3, gunicorn) routed into it.

Human format on a terminal, JSON lines with ``--log-format json`` / ``NEXUS_LOG_FORMAT=json``.
Work runs inside ``logger.contextualize(tenant_id=..., install_id=..., provider=...)`` so every
line says whose work it was. Secrets are redacted from every message before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

#: Patterns that look like credentials. The first group is kept, the secret part replaced.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s\"',}]+"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|api_key|apikey|password|code_verifier"
        r"|token|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
    ),
    re.compile(r"()\bxox[abposer]-[A-Za-z0-9-]+"),  # Slack tokens
    re.compile(r"()\bxoxe[.-][A-Za-z0-9.-]+"),  # Slack rotating tokens
    re.compile(r"(://[^:/@\s]+:)[^@\s]+(?=@)"),  # passwords in URLs
    # OAuth's state and authorization code in a query string (a callback URL in an access log)
    re.compile(r"([?&](?:state|code)=)[^&\s\"'#]+"),
]
REDACTED = "***"


def redact(text: str) -> str:
    """Replace anything that looks like a credential in ``text``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _patch(record: Record) -> None:
    record["message"] = redact(record["message"])


def _json_patch(record: Record) -> None:
    _patch(record)
    payload = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["extra"].get("_logger") or record["name"],
        "message": record["message"],
        **{k: v for k, v in record["extra"].items() if not k.startswith("_")},
    }
    if record["exception"] is not None:
        exc = record["exception"]
        name = exc.type.__name__ if exc.type else "Exception"
        payload["exception"] = redact(f"{name}: {exc.value}")
    record["extra"]["_json"] = json.dumps(payload, default=str)


_PRETTY = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[_ctx]}</cyan>{message}"
)


def _pretty_patch(record: Record) -> None:
    _patch(record)
    extra = record["extra"]
    parts = [f"{k}={extra[k]}" for k in ("provider", "tenant_id", "install_id") if k in extra]
    record["extra"]["_ctx"] = ("[" + " ".join(parts) + "] ") if parts else ""


class InterceptHandler(logging.Handler):
    """Send stdlib log records (rq, urllib3, gunicorn) to loguru, keeping level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: FrameType | None = logging.currentframe()
        depth = 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.bind(_logger=record.name).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


_library_checked = False


def configure_for_library(level: str, fmt: str) -> bool:
    """Library use (``IntegrationService`` in an application): apply LOG_LEVEL and
    NEXUS_LOG_FORMAT to loguru when the application has not configured loguru itself — its
    default stderr handler (id 0, DEBUG and up) is still installed. An application's own loguru
    handlers and its stdlib logging are left alone. Returns whether it configured anything."""
    global _library_checked
    if _library_checked:
        return False
    _library_checked = True
    try:
        logger.remove(0)
    except ValueError:  # the application set loguru up: its choice
        return False
    configure_logging(level, fmt, intercept_stdlib=False)
    return True


def configure_logging(
    level: str = "INFO", fmt: str = "pretty", sink: Any = None, *, intercept_stdlib: bool = True
) -> None:
    """Install the SDK's logging setup; safe to call again (it replaces the previous one).
    ``intercept_stdlib`` also routes the stdlib's loggers (rq, urllib3, gunicorn) into loguru
    at the same threshold (the CLI's processes); a library leaves them to the application."""
    logger.remove()
    if fmt == "json":
        logger.configure(patcher=_json_patch)
        logger.add(
            sink or sys.stderr,
            level=level,
            # A callable format: loguru then appends no multi-line traceback to the JSON line.
            format=lambda _record: "{extra[_json]}\n",
            colorize=False,
            backtrace=False,
            diagnose=False,
        )
    else:
        logger.configure(patcher=_pretty_patch)
        logger.add(
            sink or sys.stderr,
            level=level,
            format=_PRETTY,
            colorize=None if sink is None else False,
            backtrace=False,
            diagnose=False,
        )
    if not intercept_stdlib:
        return
    # The stdlib threshold follows ours: a DEBUG record urllib3 would build on every request
    # only to be dropped by loguru costs ~45 us of CPU.
    logging.basicConfig(handlers=[InterceptHandler()], level=logger.level(level).no, force=True)
    for name in ("rq", "rq.worker", "urllib3", "gunicorn.error", "gunicorn.access"):
        std = logging.getLogger(name)
        std.handlers = []
        std.propagate = True
