"""A real Chromium (Debian's /usr/bin/chromium) driven by Playwright, against the built dashboard.

Every test gets a fresh browser context; its last screen is saved to
``artifacts/browser/<test>.png`` (also when it fails), with any page errors in ``<test>.log``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.gateway.state import DASHBOARD
from tests.conftest import REPO

ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def sign_in(page: Any, base: str, token: str) -> None:
    """Give the tab the sign-in cookie the dashboard's sign-in sets (POST /api/auth/session)."""
    await page.context.add_cookies(
        [{"name": "vertac_token", "value": token, "url": base, "httpOnly": True,
          "sameSite": "Strict"}]
    )  # fmt: skip


def chromium_path() -> str | None:
    for candidate in (os.environ.get("VERTAC_CHROMIUM"), "/usr/bin/chromium", "chromium"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("VERTAC_NO_SKIPS"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (make install)")
    binary = chromium_path()
    if binary is None:
        _skip_or_fail("chromium is not installed (apt-get install chromium chromium-driver)")
    if not (DASHBOARD / "index.html").is_file():
        _skip_or_fail("the dashboard is not built (make web)")
    async with async_playwright() as pw:
        # Playwright gives the browser a new, empty profile directory of its own.
        browser = await pw.chromium.launch(
            executable_path=binary, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(chromium: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A new tab; page errors fail the test, and the last screen is kept as an artifact."""
    context = await chromium.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True
    )
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    tab.errors = errors
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = request.node.name.replace("/", "_")
        try:
            await tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            (ARTIFACTS / f"{name}.log").write_text("\n".join(errors) + "\n")
            await context.close()
    uncaught = [e for e in errors if e.startswith("pageerror")]
    assert not uncaught, f"the page threw: {uncaught}"
