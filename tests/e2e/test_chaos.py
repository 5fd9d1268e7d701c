"""The short form of ``make chaos``: every fault at a few thousand samples per second; nothing
lost, nothing duplicated, no cycle aborted, missing, stuck or recorded twice; where analysis and
alerts run, every cycle analysed once and every alert raised once."""

from __future__ import annotations

import pytest

from tests.chaos.suite import SCENARIOS, SHORT, run_scenario, table

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.fault_name for s in SCENARIOS])
async def test_fault_loses_and_duplicates_nothing(scenario) -> None:  # type: ignore[no-untyped-def]
    row = await run_scenario(scenario, SHORT)
    print("\n" + table([row]))
    assert row.published == round(SHORT.seconds * 10)
    assert row.cycles >= 5
    assert (row.lost, row.duplicated) == (0, 0), f"{table([row])}\n{row.notes}"
    assert (row.aborted, row.dup_cycles, row.missing) == (0, 0, 0), f"{table([row])}\n{row.notes}"
    assert row.stuck == 0, f"{table([row])}\n{row.notes}"
    assert (row.dup_analyses, row.missing_analyses) == (0, 0), f"{table([row])}\n{row.notes}"
    if row.analyses >= 0:
        assert row.analyses > 0, f"{table([row])}\n{row.notes}"
    assert row.dup_alerts == 0, f"{table([row])}\n{row.notes}"
    if row.alerts_raised >= 0:
        assert row.alerts_raised == row.expected_raises > 0, f"{table([row])}\n{row.notes}"
    assert not row.died, row.notes
    assert not row.refused, row.refused  # each service within its own bus permissions
