"""Fault injection for the resume tests: `OPENVLT_CRASH_AT=<point>` kills the process at that point.

Points are named `before:<stage>`, `after:<stage>` (outputs renamed, manifest not yet updated),
`<stage>:chunk:<i>` (generation stages) and `sft:step:<n>` / `grpo:step:<n>` (training). The kill
is SIGKILL, like `kill -9` or the OOM killer: no cleanup code runs.
"""
import logging
import os
import signal

log = logging.getLogger(__name__)


def crashpoint(name: str) -> None:
    if os.environ.get("OPENVLT_CRASH_AT") == name:
        log.warning("OPENVLT_CRASH_AT=%s: killing the process", name)
        os.kill(os.getpid(), signal.SIGKILL)
