"""The built-in stages, registered through the same hook as any third-party plugin.

Each module of ``alpr_topo.stages`` listed here exposes ``STAGE_TYPES``.
"""

from __future__ import annotations

import importlib

from ..core.stage import Stage
from .hookspecs import hookimpl

STAGE_MODULES = ("testing", "capture", "synthetic", "detect", "track", "ocr", "dedup", "publish", "publish_kafka", "alert_rules",
                 "source_kafka", "sink_postgres", "sink_opensearch")


@hookimpl
def alpr_topo_stage_types() -> list[type[Stage]]:
    found: list[type[Stage]] = []
    for name in STAGE_MODULES:
        found.extend(importlib.import_module(f"alpr_topo.stages.{name}").STAGE_TYPES)
    return found
