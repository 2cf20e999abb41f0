"""One service (a PostgreSQL or Azurite server) for the whole test session, started on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


class SessionService(Generic[S]):
    """``get()`` starts the service the first time (a start that fails is cleaned up and raised, and the next call
    tries again); ``stop()``, called at the session's end, stops it if it was started. Safe across threads."""

    def __init__(self, make: Callable[[], S]) -> None:
        self._make = make
        self._service: S | None = None
        self._lock = threading.Lock()

    def get(self) -> S:
        with self._lock:
            if self._service is None:
                service = self._make()
                try:
                    service.start()
                except BaseException:
                    service.stop()
                    raise
                self._service = service
            return self._service

    def stop(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.stop()
                self._service = None
