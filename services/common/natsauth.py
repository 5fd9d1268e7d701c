"""Users of the bus and what each may publish and subscribe to: the nats-server configuration
``vertac run`` writes (``<data-dir>/nats.conf``), with passwords in ``<data-dir>/nats.secrets``.

- ``admin`` (``vertac run`` itself, ``vertac bus init``): everything.
- ``ingest``, ``cycles``, ``analysis``, ``alerts``, ``gateway``: every VerTac subject and the
  JetStream API, except creating, changing, purging or deleting streams.
- ``edge-<stream>``: publishes its stream's samples, registration and status only. It may read
  and write its own keys of the registry and sequence buckets, and nothing else. It sees no
  subject but its own replies.
- No one else connects: there is no anonymous user.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from schemas import subjects

SERVICES = ("ingest", "cycles", "analysis", "alerts", "gateway")
ADMIN = "admin"
_STREAM_ADMIN = [f"$JS.API.STREAM.{op}.>" for op in ("CREATE", "UPDATE", "DELETE", "PURGE")]


def edge_user(stream_id: str) -> str:
    return f"edge-{subjects.check_stream_id(stream_id)}"


def _edge_permissions(stream_id: str) -> dict[str, object]:
    own = []
    for bucket in (subjects.KV_STREAMS, subjects.KV_SEQ):
        own += [
            f"$KV.{bucket}.{stream_id}",
            f"$JS.API.STREAM.INFO.KV_{bucket}",
            f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
            f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{stream_id}",
        ]
    return {
        "publish": {
            "allow": [
                subjects.samples(stream_id),
                subjects.registry(stream_id),
                subjects.edge_status(stream_id),
                "$JS.API.INFO",
                *own,
            ]
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def _service_permissions() -> dict[str, object]:
    return {"publish": {"allow": [">"], "deny": _STREAM_ADMIN}, "subscribe": {"allow": [">"]}}


def server_config(passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block of nats-server for these users (JSON is valid NATS config)."""
    users = []
    for user, password in sorted(passwords.items()):
        entry: dict[str, object] = {"user": user, "password": password}
        if user in SERVICES:
            entry["permissions"] = _service_permissions()
        elif user.startswith("edge-"):
            entry["permissions"] = _edge_permissions(user.removeprefix("edge-"))
        elif user != ADMIN:
            raise ValueError(f"unknown bus user {user!r}")
        users.append(entry)
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"


def url_for(url: str, user: str, password: str) -> str:
    """``nats://host:port`` with the user's name and password in it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


class BusUsers:
    """The passwords of the bus users, kept in a file (mode 600), and the config made of them."""

    def __init__(self, secrets_file: Path, config_file: Path) -> None:
        self.secrets_file = secrets_file
        self.config_file = config_file

    def passwords(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.secrets_file.read_text()))
        except (OSError, ValueError):
            return {}

    def ensure(self, *users: str) -> dict[str, str]:
        """Passwords for ``users`` (made when missing), written with the config."""
        known = self.passwords()
        for user in (ADMIN, *SERVICES, *users):
            known.setdefault(user, secrets.token_urlsafe(24))
        fd = _private(self.secrets_file)
        with open(fd, "w") as f:
            json.dump(known, f)
        fd = _private(self.config_file)
        with open(fd, "w") as f:
            f.write(server_config(known))
        return known


def _private(path: Path) -> int:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.chmod(path, 0o600)
    return fd
