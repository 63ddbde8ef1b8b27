"""Extension points other apps subscribe to in their AppConfig.ready(), so that task_core never
imports them."""

from django.dispatch import Signal

# Sent by the worker once an attempt is claimed, right before its handler runs (in the process
# that runs it): task, ctx (TaskContext). Lets an app take per-attempt baselines (memory...).
attempt_started = Signal()

# Sent by the worker inside the transaction that records an attempt's outcome (the status
# change and its timeline event), with attempt_finished's arguments: what a receiver writes
# commits, or rolls back, with the outcome at no extra commit. Not sent when the attempt lost
# its task ("lost"). Receivers must be quick and keep a database error from aborting the
# outcome: write inside their own transaction.atomic() (a savepoint) and catch.
attempt_recorded = Signal()

# Sent by the worker after every execution attempt, whatever its outcome, once the outcome is
# committed: task, ctx (TaskContext), outcome (final status, "retrying", "lost"), cpu_time_s,
# wall_time_s, recorded (True when attempt_recorded was sent for this attempt).
attempt_finished = Signal()

# Sent when a brand webhook is disabled after too many consecutive failures: webhook, reason.
webhook_disabled = Signal()

# Sent by the events relay inside the transaction that marks events published: events (the
# TaskEvent rows just published, in id order). Brand webhooks create their deliveries here.
events_relayed = Signal()
