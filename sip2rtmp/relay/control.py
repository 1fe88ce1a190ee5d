"""What a front end may ask of a running relay: DTMF toward the callee, a hangup, or a file
played toward the callee; and how the relay takes each request."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sip2rtmp.relay.core import NOT_UP, RelayCore
from sip2rtmp.relay.events import DtmfMethod

if TYPE_CHECKING:
    from sip2rtmp.relay.media import CallMedia

CommandName = Literal["dtmf", "hangup", "inject"]
HANGUP_REASON = "hangup requested"
"""The reason a requested hangup gives: a `Finished` reason once the call is up, the
`Interrupted` signal name before (the run ends as a signal would end it)."""

Answer = Callable[[str | None], None]
"""Called on the relay's event loop once a command was taken: with None when it is carried
out (or under way), else with why it cannot be done now."""


@dataclass(frozen=True)
class Command:
    """One request of a front end (`RelayControl.submit`)."""

    name: CommandName
    digits: str = ""
    """`dtmf`: the keys, in order."""
    method: DtmfMethod | None = None
    """`dtmf`: how to send them; None for RFC 4733 when negotiated, else SIP INFO."""
    file: str = ""
    """`inject`: the file or URL to play toward the callee."""


def _unanswered(reason: str | None) -> None:
    """The answer of a request nobody waits for (a key of the live view)."""
    del reason


class RelayControl:
    """Requests are queued and executed on the relay's event loop; calling from another thread
    (a key reader, a command reader) is safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: list[tuple[Command, Answer]] = []
        self._hangup = False
        self._listeners: list[Callable[[], object]] = []

    def send_dtmf(self, digits: str) -> None:
        self.submit(Command("dtmf", digits), _unanswered)

    def hangup(self) -> None:
        self._hangup = True
        self.submit(Command("hangup"), _unanswered)

    def submit(self, command: Command, answer: Answer) -> None:
        """Queue `command`; `answer` is called on the relay's loop once it was taken."""
        with self._lock:
            self._commands.append((command, answer))
        self._notify()

    def take_commands(self) -> list[tuple[Command, Answer]]:
        with self._lock:
            taken, self._commands = self._commands, []
        return taken

    def take_dtmf(self) -> list[str]:
        """The digits of the DTMF requests not taken yet; other requests stay queued."""
        with self._lock:
            digits = [command.digits for command, _ in self._commands if command.name == "dtmf"]
            self._commands = [item for item in self._commands if item[0].name != "dtmf"]
        return digits

    @property
    def hangup_requested(self) -> bool:
        return self._hangup

    def on_request(self, listener: Callable[[], object]) -> None:
        """`listener` is called (from the requesting thread) after each request."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()


def carry_out(
    core: RelayCore, command: Command, answer: Answer, media: CallMedia | None, now: float
) -> Coroutine[Any, Any, None] | None:
    """Take one request on the relay's loop: the core decides on hangups and DTMF; an inject
    is work for the shell to run (returned), answered once the file plays."""
    if command.name == "hangup":
        answer(None)
        core.stop(now, HANGUP_REASON)
    elif command.name == "dtmf":
        answer(core.request_dtmf(command.digits, now, command.method))
    elif (refused := core.refusal()) is not None or media is None:
        answer(refused or NOT_UP)
    else:
        return _answered(media.audio.inject(command.file), answer)
    return None


async def _answered(work: Awaitable[str | None], answer: Answer) -> None:
    """Answer a command with the outcome of `work`, once it is done."""
    answer(await work)
