"""The stage base classes that built-in and third-party stage types derive from.

A stage type declares its parameters as a pydantic model (``Params``) so that a topology is
checked before any process starts, and ``alpr-topo plugins`` can list every parameter with its
type, default and description.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict

from .envelope import Envelope

if TYPE_CHECKING:  # the runtime context imports numpy and zmq; stages only need the type
    from .context import StageContext


class StageParams(BaseModel):
    """Base of every parameter schema: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class Stage:
    """One step of the graph, run in its own process (one per replica).

    Subclasses set ``type_name`` (``family.name``, e.g. ``transform.passthrough``) and may set
    ``Params``. The runtime calls ``setup`` once, ``process`` per envelope, ``teardown`` once,
    all in the same thread, so a stage needs no locking.
    """

    type_name: ClassVar[str] = ""
    Params: ClassVar[type[StageParams]] = StageParams
    #: Deliver envelopes of one camera in frame-id order even when upstream has replicas,
    #: and keep each camera on one replica of this stage (a tracker needs this).
    ordered: ClassVar[bool] = False
    is_source: ClassVar[bool] = False

    def __init__(self, params: StageParams, ctx: "StageContext") -> None:
        self.params = params
        self.ctx = ctx
        self.log: logging.Logger = ctx.log

    def setup(self) -> None:
        """Load models, open files. Runs before the stage receives anything."""

    def process(self, env: Envelope) -> Envelope | Sequence[Envelope] | None:
        """Handle one envelope; return it (changed), several envelopes, or None to drop it.

        A stage that does better on several envelopes at once (a detector batching the frames of
        several cameras into one model call) may also define ``process_batch(envs)`` returning
        one such result per envelope; the runtime then hands it up to ``params.batch_size`` of
        what is queued whenever more than one envelope waits.
        """
        return env

    def tick(self) -> Envelope | Sequence[Envelope] | None:
        """Called about twice a second even when nothing arrives: emit what is due by time
        (e.g. an event for a vehicle that left while its camera went quiet)."""
        return None

    def flush(self) -> Envelope | Sequence[Envelope] | None:
        """Called once when the stage drains (shutdown, hot swap), after its last envelope:
        emit what it still holds, since ``teardown`` cannot send anything."""
        return None

    def teardown(self) -> None:
        """Close files and models. Runs last, also on a drain for hot swap; sends nothing."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Type name, summary and parameter schema, for ``alpr-topo plugins``."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return {
            "type": cls.type_name,
            "summary": doc[0] if doc else "",
            "source": cls.is_source,
            "ordered": cls.ordered,
            "params": cls.Params.model_json_schema().get("properties", {}),
            "required": cls.Params.model_json_schema().get("required", []),
        }


class Source(Stage):
    """A stage with no inputs that makes envelopes (cameras, files, test patterns).

    The runtime calls ``produce`` whenever every downstream queue has room, so a source never
    needs to block on backpressure itself.
    """

    is_source = True

    def __init__(self, params: StageParams, ctx: "StageContext") -> None:
        super().__init__(params, ctx)
        self.finished = False

    def produce(self) -> Envelope | None:
        """Return the next envelope, or None when none is due yet (see ``wait_s``).

        Set ``self.finished = True`` once the source has nothing more to give.
        """
        raise NotImplementedError

    def wait_s(self) -> float:
        """Seconds until the next envelope is due, so the runtime can sleep instead of spin."""
        return 0.0
