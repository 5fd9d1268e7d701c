"""How many new alerts a stream may raise a minute; the rest are summarised. Pure; no I/O."""

from __future__ import annotations

from schemas.timeutil import NS
from services.alerts.lifecycle import Transition


class RateGuard:
    """At most ``per_minute`` new alerts per stream in any 60 s; the rest are held back and
    counted by one summary alert, which clears once a minute passes without any held back."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.recent: dict[str, list[int]] = {}
        self.held: dict[str, set[str]] = {}  # stream -> alert ids held back
        self.summary: dict[str, tuple[str, int, int, int]] = {}  # id, count, raised, last held
        self.summaries = 0

    def admit(self, stream_id: str, t: Transition) -> bool:
        """Whether ``t`` may be published (its alert may have been held back before)."""
        held = self.held.setdefault(stream_id, set())
        if t.alert_id in held:
            if t.state == "cleared":
                held.discard(t.alert_id)
            return False
        if t.state != "raised" or t.occurrences != 1:
            return True
        window = [x for x in self.recent.get(stream_id, []) if t.at_ns - x < 60 * NS]
        if len(window) < self.per_minute:
            self.recent[stream_id] = [*window, t.at_ns]
            return True
        self.recent[stream_id] = window
        held.add(t.alert_id)
        return False

    def summary_for(self, stream_id: str, at_ns: int, held_now: int) -> Transition | None:
        """The summary alert's event after ``held_now`` alerts were held back just now."""
        if held_now:
            alert_id, count, raised, _ = self.summary.get(stream_id) or (
                f"{stream_id}._rate.{self.summaries + 1}",
                0,
                at_ns,
                at_ns,
            )
            if stream_id not in self.summary:
                self.summaries += 1
            count += held_now
            self.summary[stream_id] = (alert_id, count, raised, at_ns)
            return Transition(
                alert_id,
                "raised",
                at_ns,
                "warning",
                f"alert rate above {self.per_minute}/min: {count} alerts held back",
                count,
                raised,
            )
        current = self.summary.get(stream_id)
        if current is not None and at_ns - current[3] >= 60 * NS:
            del self.summary[stream_id]
            alert_id, count, raised, _ = current
            return Transition(
                alert_id, "cleared", at_ns, "warning", "alert rate back to normal", count, raised
            )
        return None
