"""Media threads name themselves for the kernel, so system tools tell them apart."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from sip2rtmp.media.threads import name_native_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl names are Linux's")
def test_a_thread_names_itself_in_the_kernel_cut_to_15_bytes() -> None:
    seen: list[str] = []

    def run() -> None:
        name_native_thread("s2r-transcode-and-more")
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ["s2r-transcode-a\n"]
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text() != seen[0]
