"""Extension points other apps subscribe to in their AppConfig.ready(), so that task_core never
imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.dispatch import Signal

# Sent by the worker once an attempt is claimed, right before its handler runs (in the process
# that runs it): task, ctx (TaskContext). Not sent when nothing listens.
attempt_started = Signal()

# Sent by the worker after every execution attempt, whatever its outcome, once the outcome is
# committed: task, ctx (TaskContext), outcome (final status, "retrying", "lost"), cpu_time_s,
# wall_time_s, recorded (True when the outcome, with its outcome rows, was recorded by this
# attempt). Not sent when nothing listens.
attempt_finished = Signal()

# Sent when a brand webhook is disabled after too many consecutive failures: webhook, reason.
webhook_disabled = Signal()

# Sent by the events relay inside the transaction that marks events published: events (the
# TaskEvent rows just published, in id order). Brand webhooks create their deliveries here.
events_relayed = Signal()


@dataclass(frozen=True)
class OutcomeRow:
    """A row an app records with every attempt's outcome (monitoring's metrics row).

    ``build(task=, ctx=, outcome=, cpu_time_s=, wall_time_s=)`` returns an unsaved model
    instance; the worker inserts it in the very statement that records the outcome (the status
    change and its timeline event: no round trip or commit of its own, and only if the attempt
    still owned its task), or on its own after an attempt whose outcome was not recorded
    (``lost``). Its table needs a unique key per attempt: a second row is a no-op (``ON CONFLICT
    DO NOTHING``). A builder that raises, or a row the database refuses, costs that row only,
    never the outcome. ``start(ctx)``, if given, runs right before the handler (a baseline).
    """

    build: Callable[..., Any]
    start: Callable[[Any], None] | None = None


# name -> OutcomeRow, filled by the apps' ready() (register_outcome_row).
outcome_rows: dict[str, OutcomeRow] = {}


def register_outcome_row(name: str, row: OutcomeRow) -> None:
    outcome_rows[name] = row
