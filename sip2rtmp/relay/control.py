"""What a front end may ask of a running relay: DTMF toward the callee, or a hangup."""

from __future__ import annotations

from collections.abc import Callable


class RelayControl:
    """Requests are queued and executed on the relay's event loop; calling from another thread
    (a key reader) is safe."""

    def __init__(self) -> None:
        self._dtmf: list[str] = []
        self._hangup = False
        self._listeners: list[Callable[[], object]] = []

    def send_dtmf(self, digits: str) -> None:
        self._dtmf.append(digits)
        self._notify()

    def hangup(self) -> None:
        self._hangup = True
        self._notify()

    def take_dtmf(self) -> list[str]:
        taken, self._dtmf = self._dtmf, []
        return taken

    @property
    def hangup_requested(self) -> bool:
        return self._hangup

    def on_request(self, listener: Callable[[], object]) -> None:
        """`listener` is called (from the requesting thread) after each request."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
