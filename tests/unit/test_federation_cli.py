"""The federation options of ``vertac run`` and ``vertac central``, refused with one line before
any server starts, and the nats-server configuration a site and central are given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.embedded import NatsServer
from services.federation import site_leaf_remote
from services.natsauth import BusUsers
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "--site", "Bad Id"], "--site: site id 'Bad Id' is not valid"),
        (["central", "--site", "samples"], "--site: site id 'samples' is reserved"),
        (["run", "--central", "nats-leaf://x:7422"], "--central needs --site"),
        (
            ["central", "--site", "north", "--site-samples", "south=digest"],
            "'south' is not one of the --site ids",
        ),
        (
            ["central", "--site", "north", "--site-samples", "north=half"],
            "the mode is one of full, digest, none",
        ),
    ],
)
def test_a_wrong_site_option_is_one_line_and_exit_2(args: list[str], said: str) -> None:
    out = subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO,
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert said in out.stderr


def test_a_site_and_central_are_configured_as_leaf_and_hub(tmp_path: Path) -> None:
    remote = site_leaf_remote("nats-leaf://site-north:pw@central:7422")
    assert json.loads(remote)["deny_imports"] == ["vertac.>"]
    site = NatsServer(tmp_path / "s", domain="north", leaf_remotes=(remote,))
    text = site.config_text(tmp_path / "log")
    assert 'server_name: "vertac-north"' in text
    assert 'domain: "north"' in text and "remotes: [" in text and "site-north:pw@central" in text
    users = BusUsers(tmp_path / "nats.secrets", tmp_path / "nats.conf")
    users.ensure(sites=("north",))
    hub = NatsServer(tmp_path / "c", domain="central", leaf_port=7422, config=users.config_file)
    text = hub.config_text(tmp_path / "log")
    assert 'listen: "127.0.0.1:7422"' in text and "no_advertise: true" in text
    # the site signs in as a user of the bus, held to its own site's data by central
    conf = json.loads(users.config_file.read_text().removeprefix("authorization "))
    north = next(u for u in conf["users"] if u["user"] == "site-north")
    assert north["password"] == users.leaf_users.passwords()["site-north"]
    assert "vertac-site.north.data.>" in north["permissions"]["publish"]["allow"]
    assert not any("south" in s or s.startswith("vertac.") for s in json.dumps(north).split('"'))
    plain = NatsServer(tmp_path / "p").config_text(tmp_path / "log")
    assert "leafnodes" not in plain and "domain" not in plain
