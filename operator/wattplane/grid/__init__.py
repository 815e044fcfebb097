"""Grid demand response for wattplane: the operator as an OpenADR 2.0b VEN (through openleadr).

A policy's ``budget.demandResponse`` names a VTN. :class:`GridService` runs one :class:`Ven` per such
policy; each turns the VTN's events into budget windows (:func:`map_event`) that the planner merges with
``budget.schedule``, records price signals as :class:`PriceInterval` series, reports the covered GPUs'
measured power, and keeps its events in a ConfigMap (:class:`ConfigMapBackend`) so a restarted
operator loses none.
"""

from wattplane.grid.events import EventBook, EventPlan, PriceInterval, decide, map_event
from wattplane.grid.service import GridService
from wattplane.grid.store import ConfigMapBackend, EventStore, MemoryBackend, StoreError, configmap_name
from wattplane.grid.ven import Ven, VenCredentials

__all__ = [
    "ConfigMapBackend",
    "EventBook",
    "EventPlan",
    "EventStore",
    "GridService",
    "MemoryBackend",
    "PriceInterval",
    "StoreError",
    "Ven",
    "VenCredentials",
    "configmap_name",
    "decide",
    "map_event",
]
