"""Bearer JWTs of an OIDC provider: a local key set served over HTTP (as a provider's JWKS
endpoint is), tokens signed with it, a real gateway checking them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.common.config import CommonSettings
from tests.conftest import serve_gateway

pytestmark = pytest.mark.integration


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def provider() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """An issuer URL whose ``/.well-known/jwks.json`` serves one RSA key (kid ``k1``)."""
    key = new_key()
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/realms/plant/.well-known/jwks.json"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if found else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/realms/plant", key
    finally:
        server.shutdown()


def token(key: rsa.RSAPrivateKey, issuer: str, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": issuer, "aud": "vertac", "sub": "u-17", "iat": now, "exp": now + 300,
            "preferred_username": "anna", "vertac_role": "operator", **claims}  # fmt: skip
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


async def test_a_provider_jwt_signs_in_with_its_role_and_a_forged_one_does_not(
    common: CommonSettings, provider: tuple[str, rsa.RSAPrivateKey]
) -> None:
    issuer, key = provider
    async with (
        serve_gateway(common, oidc_issuer=issuer) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as client,
    ):

        async def me(jwt_: str) -> httpx.Response:
            return await client.get("/api/auth/me", headers={"Authorization": f"Bearer {jwt_}"})

        r = await me(token(key, issuer))
        assert r.status_code == 200, r.text
        assert r.json() | {"name": "anna", "role": "operator", "via": "oidc"} == r.json()
        r = await client.post("/api/live/cycle/start", params={"stream_id": "nope"},
                              headers={"Authorization": f"Bearer {token(key, issuer)}"})  # fmt: skip
        assert r.status_code == 404  # allowed: the stream is just unknown
        r = await client.put("/api/live/stream/nope/alert-rules/r1", json={},
                             headers={"Authorization": f"Bearer {token(key, issuer)}"})  # fmt: skip
        assert r.status_code == 403  # an operator sets no rules
        r = await me(token(key, issuer, vertac_role=["viewer", "admin"]))
        assert r.json()["role"] == "admin"
        # a provider's user named like the command line is not taken for it
        r = await me(token(key, issuer, preferred_username="cli:root"))
        assert r.json()["name"] == "oidc:cli:root" and r.json()["via"] == "oidc"
        refused = {
            "another audience": token(key, issuer, aud="grafana"),
            "another issuer": token(key, "https://evil.example"),
            "expired": token(key, issuer, exp=int(time.time()) - 60),
            "no role": token(key, issuer, vertac_role="superuser"),
            "another key": token(new_key(), issuer),
            "not a JWT": "eyJ.garbage.here",
        }
        for why, forged in refused.items():
            r = await me(forged)
            assert r.status_code == 401, (why, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
