"""Set-ups several tests share: cycles and analysis running in the test, a signal trigger, and a
simulated machine whose fourth cycle is faulty."""

from __future__ import annotations

from typing import Any

from edge.simulator import Fault, MachineModel, build_machine
from services.analysis.app import serve as serve_analysis
from services.analysis.config import Settings as AnalysisSettings
from services.common.config import CommonSettings
from services.cycles.app import serve as serve_cycles
from services.cycles.config import Settings as CyclesSettings

# cycles cut on the simulator's cycle_active input
SIGNAL_TRIGGER = {
    "trigger": "signal",
    "signal_sensor": "cycle_active",
    "start_above": 0.5,
    "stop_below": 0.5,
}


def start_cycles_and_analysis(running: Any, common: CommonSettings, **analysis: Any) -> None:
    """The cycles service (ticking every 0.1 s) and the analysis service with ``analysis``
    settings, as tasks of the test's ``running`` fixture."""
    running.start(serve_cycles(CyclesSettings(metrics_port=0, tick_s=0.1), common, running.stop))
    running.start(
        serve_analysis(AnalysisSettings(metrics_port=0, **analysis), common, running.stop)
    )


def flow_offset_machine(stream_id: str) -> MachineModel:
    """Six sensors at 50 Hz, 4 s cycles on ``cycle_active``; cycles 1-3 make the automatic
    reference, cycle 4 has flow_1 offset by 8 l/min (170 frames of 100 ms hold four cycles)."""
    return build_machine(
        stream_id=stream_id,
        sensors=6,
        rate_hz=50,
        cycle_s=4,
        active_signal=True,
        faults=(Fault("flow_1", "offset", 8.0, 3),),
    )
