"""``vertac deploy init``: the secrets of the production layout in ``deploy/``.

It writes, next to ``docker-compose.yml``:

- ``secrets/ca.crt`` and ``ca.key``: a CA of this installation (a plant with its own PKI puts its
  own CA and certificates in the same files instead);
- ``secrets/nats.crt|key`` (the three NATS nodes, server and route client), ``postgres.crt|key``
  and ``gateway.crt|key``, each for its compose host name, ``localhost``, ``127.0.0.1`` and the
  ``--host`` names given;
- ``secrets/nats-users.conf``: the bus users and their permissions (``nats.conf`` includes it),
  with their passwords in ``secrets/nats.secrets``;
- ``secrets/edge-<stream>.env`` for each ``--edge``: what ``vertac edge run`` needs;
- ``.env``: the passwords compose hands to the containers, and the user id they run as.

Everything is kept when it exists, so running it again only adds what is missing (new edges,
new host names need ``--renew-certs``). Private files are mode 600.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.auth import write_secret
from services.natsauth import ADMIN, SERVICES, BusUsers, edge_user
from services.pki import load_ca, make_ca, make_leaf, write_cert, write_key

# the compose host names each certificate is for
SERVERS = {
    "nats": ["nats-1", "nats-2", "nats-3"],
    "postgres": ["postgres"],
    "gateway": ["gateway"],
}
LOCAL = ["localhost", "127.0.0.1"]
OTHER_PASSWORDS = ("POSTGRES_PASSWORD", "VERTAC_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
                   "INFLUX_ADMIN_PASSWORD", "INFLUX_TOKEN")  # fmt: skip


@dataclass
class DeployInit:
    root: Path  # the folder of docker-compose.yml
    hosts: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)
    renew_certs: bool = False
    edge_url: str = ""  # NATS as edges reach it; default tls://<first --host>:4222
    made: list[str] = field(default_factory=list)

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def run(self) -> list[str]:
        self.secrets.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        self._certificates()
        users = BusUsers(self.secrets / "nats.secrets", self.secrets / "nats-users.conf")
        before = set(users.passwords())
        nats = users.ensure(*(edge_user(s) for s in self.edges))
        self.made += [f"NATS user {u}" for u in sorted(set(nats) - before)]
        for stream in self.edges:
            self._edge_env(stream, nats[edge_user(stream)])
        self._env(nats)
        return self.made

    def _certificates(self) -> None:
        ca_crt, ca_key = self.secrets / "ca.crt", self.secrets / "ca.key"
        if ca_crt.is_file() and ca_key.is_file():
            ca, key = load_ca(ca_crt, ca_key)
        else:
            ca, key = make_ca("VerTac CA")
            write_cert(ca, ca_crt)
            write_key(key, ca_key)
            self.made.append(str(ca_crt))
        for name, names in SERVERS.items():
            crt, pem = self.secrets / f"{name}.crt", self.secrets / f"{name}.key"
            if crt.is_file() and pem.is_file() and not self.renew_certs:
                continue
            leaf, leaf_key = make_leaf(
                names[0], ca, key, names=[*names, *LOCAL, *self.hosts], server=True,
                client=name == "nats",  # a node is a client of the others on its routes
            )  # fmt: skip
            write_cert(leaf, crt)
            write_key(leaf_key, pem)
            self.made.append(str(crt))

    def _edge_env(self, stream: str, password: str) -> None:
        path = self.secrets / f"edge-{stream}.env"
        url = self.edge_url or f"tls://{(self.hosts or ['localhost'])[0]}:4222"
        ca = (self.secrets / "ca.crt").resolve()
        write_secret(
            path,
            f"# NATS credentials of {edge_user(stream)}: publishes stream {stream} only.\n"
            f"# On another machine, copy {ca.name} with it and change VERTAC_NATS_TLS_CA.\n"
            f"VERTAC_NATS_URL={url}\nVERTAC_NATS_USER={edge_user(stream)}\n"
            f"VERTAC_NATS_PASSWORD={password}\nVERTAC_NATS_TLS_CA={ca}\n",
        )
        self.made.append(str(path))

    def _env(self, nats: dict[str, str]) -> None:
        path = self.root / ".env"
        kept = read_env(path)
        values = {k: kept.get(k) or secrets.token_urlsafe(24) for k in OTHER_PASSWORDS}
        for user in (ADMIN, *SERVICES):
            values[f"NATS_PASSWORD_{user.upper()}"] = nats[user]
        values["VERTAC_UID"] = kept.get("VERTAC_UID") or str(os.getuid())
        values["VERTAC_GID"] = kept.get("VERTAC_GID") or str(os.getgid())
        if values != {k: kept.get(k) for k in values}:
            lines = [
                "# Passwords of this VerTac installation, made by `vertac deploy init`.",
                "# docker compose reads them; keep this file private and out of version control.",
                *(f"{k}={v}" for k, v in values.items()),
            ]
            write_secret(path, "\n".join(lines) + "\n")
            self.made.append(str(path))


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a compose ``.env`` file (comments and blank lines skipped)."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def describe(made: Iterable[str]) -> str:
    made = list(made)
    return "\n".join(f"  made {m}" for m in made) if made else "  nothing to make: all present"
