"""Routes of sign-in, API tokens and the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam

from schemas.messages import (
    AuditEntry,
    ErrorBody,
    NewToken,
    SignIn,
    TokenCreated,
    TokenInfo,
    WhoAmI,
)
from services.gateway.auth import COOKIE, Admin, Authenticator, Who
from services.gateway.bodies import OffLoopJson
from services.gateway.state import ApiError, IsoTime, gw

router = APIRouter(route_class=OffLoopJson, tags=["auth"])
TokenIdPath = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$", description="Token id.")]
SESSION_S = 30 * 86400  # how long the browser keeps the sign-in cookie


def _me(request: Request, who: Who) -> WhoAmI:
    auth: Authenticator = request.app.state.auth
    return WhoAmI(
        name=who.name, role=who.role, streams=list(who.streams), via=who.via, auth=auth.enabled
    )


@router.post("/api/auth/session", response_model=WhoAmI)
async def sign_in(body: SignIn, request: Request, response: Response) -> WhoAmI:
    """Sign the browser in with an API token: it is kept as an HttpOnly, SameSite=Strict
    cookie that later requests and the WebSocket send by themselves."""
    auth: Authenticator = request.app.state.auth
    who = await auth.principal(body.token)
    response.set_cookie(
        COOKIE,
        body.token,
        max_age=SESSION_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return _me(request, who)


@router.delete("/api/auth/session", status_code=204)
async def sign_out() -> Response:
    """Forget the browser's sign-in cookie (the token itself stays valid)."""
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")
    return response


@router.get("/api/auth/me", response_model=WhoAmI)
async def me(request: Request, who: Who) -> WhoAmI:
    """Who the request is from, with the role's name (the dashboard shows what it allows)."""
    return _me(request, who)


@router.get("/api/auth/tokens", response_model=list[TokenInfo])
async def list_tokens(
    request: Request, who: Admin, include_revoked: bool = False
) -> list[TokenInfo]:
    """Every API token (never its secret)."""
    return await gw(request).tokens.list(include_revoked)


@router.post("/api/auth/tokens", status_code=201, response_model=TokenCreated)
async def create_token(body: NewToken, request: Request, who: Admin) -> TokenCreated:
    """A new API token; the answer is the only time the token is shown."""
    g = gw(request)
    if body.role == "edge" and not body.streams:
        raise ApiError(422, "an edge token needs at least one stream", "body.streams")
    if body.role != "edge" and body.streams:
        raise ApiError(422, "only an edge token has streams", "body.streams")
    token, info = await g.tokens.create(body.name, body.role, body.streams, who.name)
    await g.audit.record(who, "token.create", info.token_id, None, info)
    return TokenCreated(token=token, info=info)


@router.delete(
    "/api/auth/tokens/{token_id}",
    status_code=204,
    responses={409: {"model": ErrorBody, "description": "That is the token of this request."}},
)
async def revoke_token(token_id: TokenIdPath, request: Request, who: Admin) -> Response:
    """Revoke a token; requests with it are refused from a few seconds later on."""
    g = gw(request)
    if who.token_id == token_id:
        raise ApiError(
            409,
            "this request is made with that token: revoke it with another admin token or with "
            "vertac auth token revoke",
            "token_id",
        )
    revoked = await g.tokens.revoke(token_id)
    if revoked is None:
        raise ApiError(404, f"no active token {token_id!r}", "token_id")
    await g.audit.record(who, "token.revoke", token_id, None, revoked)
    request.app.state.auth.forget()
    return Response(status_code=204)


@router.get("/api/audit", response_model=list[AuditEntry])
async def audit(
    request: Request,
    who: Admin,
    since: Annotated[IsoTime | None, Query(description="From (ISO time).")] = None,
    until: Annotated[IsoTime | None, Query(description="Before (ISO time).")] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[
        str | None,
        Query(pattern=r"^[a-z_]+(\.[a-z_]*)?\*?$", description="e.g. alert.ack, token.*"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntry]:
    """Changes made through the API and the command line, newest first."""
    return await gw(request).audit.find(since, until, actor, action, limit)
