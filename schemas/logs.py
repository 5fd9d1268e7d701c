"""Structured logging: JSON lines when not on a terminal, readable lines on one."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# credentials that may ride in a URL, a header or a message: kept out of every log line
_SECRETS = (
    (re.compile(r"(?i)((?:access_token|token|password|secret)=)[^&\s\"'#]+"), r"\1***"),
    (re.compile(r"(?i)\b(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\bvtk_[A-Za-z0-9_-]+"), "vtk_***"),
    (re.compile(r"(://[^:/@\s\"']+:)[^@/\s\"']+@"), r"\1***@"),
)


def redact_text(text: str) -> str:
    """``text`` with tokens, passwords and URL credentials replaced by ``***``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def private_file(path: Path, mode: str = "a") -> IO[Any]:
    """Open a log file only its owner may read (mode 600; an older file is made so too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message and any ``extra`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    """``time level service: message key=value ...`` for people at a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + ": %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED)
        text = super().format(record)
        return redact_text(f"{text} {extra}" if extra else text)


def setup(service: str, level: str = "INFO", json_lines: bool | None = None) -> None:
    """Configure the root logger for ``service``."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json_lines else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "asyncio", "uvicorn.access", "httpx", "influxdb_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
