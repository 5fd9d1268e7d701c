"""Who a request is from, and whether its role allows the route: FastAPI dependencies.

A request names itself with ``Authorization: Bearer <token>`` (an API token, or a JWT from the
OIDC provider when one is set), or with the ``vertac_token`` cookie the dashboard's sign-in
sets. A WebSocket may also pass ``?access_token=`` (browsers cannot set headers on one). With
auth off every request is the anonymous admin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from services.common.auth import ANONYMOUS, RANK, InvalidToken, Principal, TokenStore
from services.gateway.state import ApiError

COOKIE = "vertac_token"
CACHE_S = 5.0  # a revoked token is refused within this time
CACHE_MAX = 10_000
log = logging.getLogger(__name__)


@dataclass
class Oidc:
    """Bearer JWTs of an OIDC provider, checked against its JWKS (keys cached by PyJWT)."""

    issuer: str
    audience: str
    jwks_url: str
    role_claim: str = "vertac_role"
    default_role: str = ""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    _keys: jwt.PyJWKClient | None = field(default=None, init=False)

    def principal(self, token: str) -> Principal:
        """The principal of a valid JWT; :class:`InvalidToken` otherwise."""
        if self._keys is None:
            self._keys = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300)
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise ProviderUnavailable(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the JWT is not valid: {exc}") from exc
        roles = claims.get(self.role_claim, self.default_role)
        found = [r for r in (roles if isinstance(roles, list) else [roles]) if r in RANK]
        if not found:
            raise InvalidToken(f"the JWT has no VerTac role in its {self.role_claim!r} claim")
        best = max(found, key=RANK.__getitem__)
        name = str(claims.get("preferred_username") or claims.get("email") or claims["sub"])
        if name.startswith("cli:"):  # the command line's names are its own
            name = f"oidc:{name}"
        return Principal(name, best, via="oidc")


class ProviderUnavailable(Exception):
    """The OIDC provider's key set could not be fetched (transient)."""


@dataclass
class Authenticator:
    """Checks credentials, caching each valid one for :data:`CACHE_S` seconds."""

    tokens: TokenStore | None
    enabled: bool = True
    oidc: Oidc | None = None
    _cache: dict[str, tuple[float, Principal]] = field(default_factory=dict)

    async def principal(self, credential: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not credential:
            raise _unauthenticated("sign in: send 'Authorization: Bearer <token>'")
        now = time.monotonic()
        cached = self._cache.get(credential)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            if credential.startswith("vtk_") or self.oidc is None:
                if self.tokens is None:
                    raise InvalidToken("no token store")
                who = await self.tokens.verify(credential)
            else:
                who = await asyncio.to_thread(self.oidc.principal, credential)
        except InvalidToken as exc:
            raise _unauthenticated(f"the token is not valid ({exc})") from exc
        except ProviderUnavailable as exc:
            raise ApiError(
                503, f"the OIDC provider cannot be reached ({exc}); retry later"
            ) from exc
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[credential] = (now + CACHE_S, who)
        return who

    def forget(self) -> None:
        """Check every credential again (after a revocation)."""
        self._cache.clear()


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, message, "Authorization", headers={"WWW-Authenticate": "Bearer"})


def credential_of(conn: HTTPConnection, *, query: bool = False) -> str | None:
    """The bearer token of a request or WebSocket, else its sign-in cookie."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if query and conn.query_params.get("access_token"):
        return conn.query_params["access_token"]
    return conn.cookies.get(COOKIE)


# declared so that the OpenAPI says how to authenticate; the credential is read by credential_of
_bearer = HTTPBearer(auto_error=False, description="An API token (vtk_...) or an OIDC JWT.")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="Set by POST /api/auth/session.")


async def current(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The request's principal (401 when it has none), once per request."""
    return await current_principal(request)


async def current_principal(request: Request) -> Principal:
    """The request's principal (401 when it has none), checked once per request."""
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None:
        auth: Authenticator = request.app.state.auth
        who = await auth.principal(credential_of(request))
        request.state.principal = who
    return who


def role(needed: str) -> Any:
    """A dependency that lets through principals whose role allows ``needed`` (else 403)."""

    async def check(who: Annotated[Principal, Depends(current)]) -> Principal:
        if not who.allows(needed):
            raise ApiError(403, f"this needs role {needed}; {who.name!r} has role {who.role}")
        return who

    check.__name__ = f"role_{needed}"
    return check


def may_write(who: Principal, stream_id: str) -> None:
    """403 unless ``who`` may post samples for (and register) ``stream_id``."""
    if not who.may_write(stream_id):
        raise ApiError(
            403, f"{who.name!r} may not post samples for stream {stream_id!r}", "stream_id"
        )


Who = Annotated[Principal, Depends(current)]
Viewer = Annotated[Principal, Depends(role("viewer"))]
Operator = Annotated[Principal, Depends(role("operator"))]
Admin = Annotated[Principal, Depends(role("admin"))]
Edge = Annotated[Principal, Depends(role("edge"))]
