"""The pool of unconfirmed producers (broker.send(confirm=False)): kept while sends come,
dropped after UNCONFIRMED_IDLE_SECONDS without one (RabbitMQ closes a connection silent for two
heartbeat intervals, and the first publish on it would be lost without an error)."""

from task_core import broker


def test_the_unconfirmed_pool_is_kept_while_used_and_replaced_once_idle(monkeypatch):
    monkeypatch.setattr(broker, "_unconfirmed", {"key": None, "pool": None, "used": 0.0})
    now = [1000.0]
    monkeypatch.setattr(broker.time, "monotonic", lambda: now[0])
    first = broker._unconfirmed_producers()
    assert first.connections.connection.transport_options["confirm_publish"] is False
    now[0] += broker.UNCONFIRMED_IDLE_SECONDS - 1
    assert broker._unconfirmed_producers() is first  # used again in time
    now[0] += broker.UNCONFIRMED_IDLE_SECONDS - 1
    assert broker._unconfirmed_producers() is first  # each send restarts the clock
    now[0] += broker.UNCONFIRMED_IDLE_SECONDS + 1
    second = broker._unconfirmed_producers()
    assert second is not first
    assert second.connections.connection.transport_options["confirm_publish"] is False
