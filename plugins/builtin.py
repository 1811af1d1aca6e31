"""The built-in stages, registered through the same hook as any third-party plugin."""

from __future__ import annotations

from ..core.stage import Stage
from ..stages.testing import JsonlSink, NullSink, Passthrough, TestPattern
from .hookspecs import hookimpl


@hookimpl
def alpr_topo_stage_types() -> list[type[Stage]]:
    return [TestPattern, Passthrough, NullSink, JsonlSink]
