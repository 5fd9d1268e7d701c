"""Who may use the API and the bus: tokens, edge credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli import fail
from services.cli.apps import DATA, auth_app, cli_principal, on_db, token_app
from services.common.config import CommonSettings


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it, e.g. line-3-hmi, press-01.")],
    role: Annotated[
        str, typer.Option(help="viewer, operator, admin, or edge (posts samples only).")
    ] = "viewer",
    stream: Annotated[
        list[str] | None, typer.Option(help="For an edge: a stream it may post (repeat).")
    ] = None,
) -> None:
    """Make an API token. The token alone goes to standard output (shown this once)."""
    import re

    from schemas.messages import TOKEN_NAME_PATTERN
    from services.common.auth import ROLES, AuditLog, TokenStore

    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}")
    if not re.fullmatch(TOKEN_NAME_PATTERN, name):
        raise fail(
            "name: 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
        )
    if (role == "edge") != bool(stream):
        raise fail("an edge token needs --stream, and only an edge token takes it")
    from schemas import subjects

    for s in stream or []:
        try:
            subjects.check_stream_id(s)
        except subjects.InvalidStreamId as exc:
            raise fail(f"--stream: {exc}") from exc

    async def work(pool: Any) -> str:
        token, info = await TokenStore(pool).create(name, role, stream, cli_principal().name)
        await AuditLog(pool).record(cli_principal(), "token.create", info.token_id, None, info)
        typer.echo(f"token {info.token_id} for {name} (role {role}) made", err=True)
        return token

    typer.echo(on_db(CommonSettings(), work))


@token_app.command("list")
def token_list(
    all_: Annotated[bool, typer.Option("--all", help="Revoked ones too.")] = False,
) -> None:
    """The API tokens (never their secrets)."""
    from services.common.auth import TokenStore

    async def work(pool: Any) -> Any:
        return await TokenStore(pool).list(all_)

    rows = on_db(CommonSettings(), work)
    typer.echo(f"{'id':<17} {'name':<24} {'role':<9} {'created':<20} {'last used':<20} streams")
    for t in rows:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M:%S}" if t.last_used_at else "-"
        state = f" (revoked {t.revoked_at:%Y-%m-%d})" if t.revoked_at else ""
        typer.echo(f"{t.token_id:<17} {t.name:<24} {t.role:<9} {t.created_at:%Y-%m-%d %H:%M:%S}"
                   f" {used:<20} {','.join(t.streams) or '-'}{state}")  # fmt: skip


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="Its id (see list).")]) -> None:
    """Revoke a token: requests with it are refused within seconds."""
    from services.common.auth import AuditLog, TokenStore

    async def work(pool: Any) -> Any:
        revoked = await TokenStore(pool).revoke(token_id)
        if revoked is not None:
            await AuditLog(pool).record(cli_principal(), "token.revoke", token_id, None, revoked)
        return revoked

    if on_db(CommonSettings(), work) is None:
        raise fail(f"no active token {token_id!r}")
    typer.echo(f"token {token_id} revoked")


@auth_app.command("edge")
def auth_edge(
    stream_id: Annotated[str, typer.Argument(help="The stream this edge publishes.")],
    out: Annotated[Path, typer.Option(help="Credentials file to write (mode 600).")],
    data_dir: Annotated[Path, typer.Option(help="vertac run's data folder.")] = DATA,
    url: Annotated[
        str, typer.Option(help="NATS as the edge reaches it.")
    ] = "nats://127.0.0.1:4222",
) -> None:
    """NATS credentials for one edge: it may publish that stream's samples, registration and
    status only. Adds the user to vertac run's nats-server (reloaded at once if it runs) and
    writes an environment file for ``vertac edge run`` (systemd EnvironmentFile=, docker
    --env-file, or ``set -a; . FILE; set +a``)."""
    from schemas import subjects
    from services.common.auth import write_secret
    from services.embedded import reload_nats
    from services.natsauth import BusUsers, edge_user, url_for

    try:
        user = edge_user(stream_id)
    except subjects.InvalidStreamId as exc:
        raise fail(str(exc)) from exc
    root = data_dir.resolve()
    if not (root / "nats").is_dir():
        raise fail(f"{root} is not a vertac run data folder (--data-dir)")
    users = BusUsers(root / "nats.secrets", root / "nats.conf")
    password = users.ensure(user)[user]
    reloaded = reload_nats(root / "nats" / "nats-server.pid")
    write_secret(out, f"# NATS credentials of {user}: publishes stream {stream_id} only\n"
                      f"VERTAC_NATS_URL={url_for(url, user, password)}\n")  # fmt: skip
    typer.echo(f"wrote {out} for {user}; nats-server "
               + ("reloaded" if reloaded else "takes it on its next start"))  # fmt: skip
