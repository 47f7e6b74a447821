"""Traffic simulator: the real call flow, routing and matcher, driven by simulated callers.

``ivr simulate`` runs :class:`~ivr.core.flow.CallFlow` in-process (no Asterisk) for a traffic
model with the shape of 2020: ~12 million calls a year, each call for a municipality
drawn by population (residents per area code from the shipped data), on a weekday/hour
profile, with unique, speech and DTMF area codes, and callers who say a village, a
former municipality or a whole sentence, who have an accent or a noisy line, who hang
up impatiently, or who ask for a municipality that is not connected (Haarlemmermeer).

Recognition is simulated by a :mod:`~ivr.simulator.confusion` model that produces *text*
(n-best): the right words, a similar candidate's name, or noise. The flow's real
:class:`~ivr.core.matcher.Matcher` decides on that text, so confusions play out as they would
on a real call. Each call leaves the same :class:`~ivr.core.callrecord.CallRecord` a real
call does, plus ``expected_municipality`` (ground truth), written with
:meth:`CallStore.save_many`.

Deterministic for a seed, whatever the number of workers: calls are cut into fixed
chunks, each with its own random stream. KPIs are always accumulated over *all* calls
(the report's :class:`~ivr.core.report.KpiAccumulator`, merged across workers) and written
next to the database (``<db>.summary.json``), also when only a sample of the records is stored (``--records sample``).
"""

from ivr.simulator.model import CALLS_PER_YEAR_2020, PROFILES, CallerProfile, World
from ivr.simulator.caller import Caller, SimulatedCall
from ivr.simulator.run import (
    BASELINE_2020,
    SimConfig,
    busy_hour_rate,
    headline_table,
    merge_accumulators,
    new_accumulator,
    run_chunks,
    simulate,
)

__all__ = ["BASELINE_2020", "CALLS_PER_YEAR_2020", "PROFILES", "Caller", "CallerProfile", "SimConfig", "SimulatedCall",
           "World", "busy_hour_rate", "headline_table", "merge_accumulators", "new_accumulator", "run_chunks",
           "simulate"]
