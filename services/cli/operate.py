"""Commands to a running system: cycles and alert rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import fail
from edge.client import Bus
from schemas.messages import AlertRule
from services.cli.apps import alerts_app, cycle_app, on_bus
from services.common.config import CommonSettings

SiteOption = Annotated[
    str, typer.Option(help="At central: the site of the stream (the command runs there).")
]


def _cycle_command(stream_id: str, command: str, reason: str, site: str = "") -> None:
    from datetime import UTC, datetime

    from schemas import subjects
    from schemas.messages import CycleCommand

    try:
        subject = subjects.site_control(site, stream_id) if site else subjects.control(stream_id)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    cmd = CycleCommand(
        stream_id=stream_id,
        command=command,
        issued_at=datetime.now(UTC),
        source="cli",
        reason=reason,
    )
    common = CommonSettings()

    async def publish(bus: Bus) -> int:
        ack = await bus.js.publish(subject, cmd.model_dump_json().encode())
        return int(ack.seq)

    seq = on_bus(common, "vertac-cli", publish)
    where = f" at site {site}" if site else ""
    typer.echo(f"{command} for {stream_id}{where} published (control stream sequence {seq})")


@cycle_app.command("start")
def cycle_start(stream_id: str, reason: str = "", site: SiteOption = "") -> None:
    """Start a cycle on STREAM_ID now."""
    _cycle_command(stream_id, "cycle_start", reason, site)


@cycle_app.command("stop")
def cycle_stop(stream_id: str, reason: str = "", site: SiteOption = "") -> None:
    """Stop the running cycle on STREAM_ID (it completes)."""
    _cycle_command(stream_id, "cycle_stop", reason, site)


@cycle_app.command("abort")
def cycle_abort(stream_id: str, reason: str = "", site: SiteOption = "") -> None:
    """Abort the running cycle on STREAM_ID (it ends aborted, with the reason)."""
    _cycle_command(stream_id, "cycle_abort", reason, site)


def load_rules_file(path: Path) -> list[AlertRule]:
    """Rules from a YAML (or JSON) file: a list of rules, or ``{"rules": [...]}``. Raises
    ValueError naming the rule and the field that is wrong."""
    import yaml
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("rules")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of rules (or a 'rules:' key holding one)")
    rules: list[AlertRule] = []
    for i, item in enumerate(data):
        try:
            rules.append(AlertRule.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "rule"
            name = item.get("rule_id", "?") if isinstance(item, dict) else "?"
            raise ValueError(f"{path}: rule {i} ({name}), {where}: {err['msg']}") from exc
    return rules


@alerts_app.command("load")
def alerts_load(path: Annotated[Path, typer.Argument(help="YAML or JSON file of rules.")]) -> None:
    """Create or replace the alert rules of a file (each names its stream_id and rule_id)."""
    import nats.errors

    from edge.client import ask
    from schemas import subjects

    try:
        rules = load_rules_file(path)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    common = CommonSettings()

    async def put_rules(bus: Bus) -> str:
        # the alerts service owns the rules: each one is a request it answers
        for rule in rules:
            subject = subjects.alert_control(rule.stream_id, "rule_put")
            try:
                status, body = await ask(bus.nc, subject, rule.model_dump_json().encode())
            except nats.errors.NoRespondersError:
                return "no alerts service answers; start it (vertac service alerts) and retry"
            except nats.errors.TimeoutError:
                return "the alerts service did not answer in time; retry"
            if status != 200:
                return f"rule {rule.stream_id}/{rule.rule_id} refused ({status}): {body.decode()}"
        return ""

    refused = on_bus(common, "vertac-cli", put_rules)
    if refused:
        raise fail(refused)
    typer.echo(f"loaded {len(rules)} alert rules from {path}")
