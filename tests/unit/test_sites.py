"""What central does to a site's message before it stores it: checked as the site checked it,
then named as central names it (``<site>.<id>``)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from nats.aio.msg import Msg

from edge.publisher import frame_message
from schemas import subjects
from schemas.frames import Frame, Series
from schemas.messages import AlertChanged, CycleStateChanged
from services.common.decoding import frame_decoder, model_decoder
from services.common.failures import BadMessage
from services.common.sites import qualify, site_decoder

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def msg(subject: str, data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject=subject, data=data, headers=headers)  # type: ignore[arg-type]


def test_a_sites_cycle_and_alert_are_named_by_the_site_and_point_to_no_recording() -> None:
    cycle = CycleStateChanged(stream_id="press-1", cycle_id="press-1-1000", state="completed",
                              at=NOW, recording="press-1-1000")  # fmt: skip
    at_central = qualify(cycle, "north")
    assert (at_central.stream_id, at_central.cycle_id) == ("north.press-1", "north.press-1-1000")
    assert at_central.recording is None  # kept at the site
    alert = AlertChanged(alert_id="press-1.high.1", stream_id="press-1", rule_id="high",
                         kind="limit", severity="warning", state="raised", at=NOW,
                         message="pressure_1 above 90")  # fmt: skip
    assert qualify(alert, "north").alert_id == "north.press-1.high.1"
    assert qualify(alert, "north").rule_id == "high"


def test_a_sites_frame_is_decoded_as_the_site_did_and_stored_under_its_central_id() -> None:
    frame = Frame("press-1", 7, (Series("p", np.arange(3.0), 0, 1_000_000),))
    subject, data, headers = frame_message(frame)
    decode = site_decoder("north", frame_decoder(lambda _: (), finite=True))
    got = decode(msg(f"vertac.north.{subject.removeprefix('vertac.')}.3", data, headers))
    assert (got.stream_id, got.seq, got.n_samples) == ("north.press-1", 7, 3)
    assert got.complete().stream_id == "north.press-1"  # decoded in full, still central's id
    with pytest.raises(BadMessage) as err:  # another site's message on this site's consumer
        decode(msg(f"vertac.south.{subject.removeprefix('vertac.')}.3", data, headers))
    assert err.value.field == "subject"


def test_a_sites_message_naming_another_stream_than_its_subject_is_refused() -> None:
    cycle = CycleStateChanged(stream_id="press-2", cycle_id="press-2-1", state="running", at=NOW)
    decode = site_decoder("north", model_decoder(CycleStateChanged))
    with pytest.raises(BadMessage) as err:
        decode(msg("vertac.north.cycles.press-1.started", cycle.model_dump_json().encode()))
    assert err.value.field == "stream_id"


def test_a_site_stream_id_names_no_local_subject() -> None:
    assert subjects.check_any_stream_id("north.press-1") == "north.press-1"
    assert subjects.site_of("north.press-1") == ("north", "press-1")
    assert subjects.site_of("press-1") is None
    with pytest.raises(subjects.SiteStream, match="site 'north'"):
        subjects.samples("north.press-1")
    for bad in ("North.press-1", "a.b.c", ".press-1", "north."):
        with pytest.raises(subjects.InvalidStreamId):
            subjects.check_any_stream_id(bad)
