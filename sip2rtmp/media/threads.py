"""Names the operating system shows for the media threads (`top -H`, `ps -L`, `perf`).

Python names its threads for itself only; the kernel keeps calling them all `sip2rtmp`. A
thread that names itself here is told apart in every system tool, so a profile or a busy
core can be traced to the pipeline, an output or the transcoder.
"""

from __future__ import annotations

import ctypes
import sys

_PR_SET_NAME = 15
"""prctl(2): set the calling thread's name, 15 bytes at most."""
_NAME_LIMIT = 15


def name_native_thread(name: str) -> None:
    """Give the calling thread `name` (cut to 15 bytes) in the kernel; a no-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    # The process's own symbols include libc's; `find_library` would run ldconfig each time.
    ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:_NAME_LIMIT], 0, 0, 0)
