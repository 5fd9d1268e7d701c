"""Signing in to the dashboard in a real Chromium against a real gateway (auth on, the default):
the sign-in page, the link ``vertac run`` prints, what a role is shown, signing out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from services.common.config import CommonSettings
from tests.conftest import GatewayUrl, admin_token, eventually

pytestmark = pytest.mark.browser


async def test_a_viewer_signs_in_with_the_link_sees_no_commands_and_signs_out(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str, page: Any
) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        r = await client.post("/api/live/register", json={
            "device_name": "Press 7", "stream_id": stream_id,
            "sensors": [{"id": "p", "type": "pressure", "unit": "bar", "rate_hz": 10}],
        })  # fmt: skip
        assert r.status_code == 201, r.text
    viewer = await admin_token(common.database_url, "hall-screen", "viewer")
    operator = await admin_token(common.database_url, "anna", "operator")

    # no cookie: the sign-in page, and a wrong token is refused there
    await page.goto(f"{gateway}/")
    form = page.get_by_test_id("signin")
    await expect(form).to_be_visible()
    await page.get_by_test_id("token").fill(viewer + "x")
    await form.locator("button").click()
    await expect(page.locator("#toast")).to_contain_text("refused")
    await expect(form).to_be_visible()

    # the sign-in link: signed in, the token gone from the address bar, no command buttons
    await page.goto(f"{gateway}/#token={viewer}")
    await expect(page.get_by_test_id("who-name")).to_have_text("hall-screen (viewer)")
    assert "token" not in page.url
    await page.goto(f"{gateway}/#/live/{stream_id}")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    await expect(page.get_by_test_id("start")).to_be_hidden()
    await expect(page.get_by_test_id("stop")).to_be_hidden()

    # signing out forgets the cookie
    await page.get_by_test_id("signout").click()
    await expect(page.get_by_test_id("signin")).to_be_visible()
    cookies = await page.context.cookies()
    assert not [c for c in cookies if c["name"] == "vertac_token"]

    # an operator, signed in on the form, may start a cycle
    await page.get_by_test_id("token").fill(operator)
    await page.get_by_test_id("signin").locator("button").click()
    await expect(page.get_by_test_id("who-name")).to_have_text("anna (operator)")
    await page.goto(f"{gateway}/#/live/{stream_id}")
    await expect(page.get_by_test_id("start")).to_be_visible()
    await page.get_by_test_id("start").click()
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:

        async def started() -> list[str]:
            r = await client.get("/api/audit", params={"action": "cycle.start", "actor": "anna"})
            return [e["target"] for e in r.json()]

        assert await eventually(started, timeout=30) == [stream_id]
