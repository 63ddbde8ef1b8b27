"""Extension points other apps subscribe to in their AppConfig.ready(), so that task_core never
imports them."""

from django.dispatch import Signal

# Sent by the worker once an attempt is claimed, right before its handler runs (in the process
# that runs it): task, ctx (TaskContext). Lets an app take per-attempt baselines (memory...).
attempt_started = Signal()

# Sent by the worker after every execution attempt, whatever its outcome:
# task, ctx (TaskContext), outcome (final status, "retrying", "lost"), cpu_time_s, wall_time_s.
attempt_finished = Signal()

# Sent when a brand webhook is disabled after too many consecutive failures: webhook, reason.
webhook_disabled = Signal()
