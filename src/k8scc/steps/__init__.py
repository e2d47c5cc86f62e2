"""The four programs the peer runs. Each is thin: it checks its arguments, then does its work,
and any failure becomes one error line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from k8scc.errors import K8sccError
from k8scc.log import StepLog

USAGE = {
    "detect": "CHAINCODE_SOURCE_DIR CHAINCODE_METADATA_DIR",
    "build": "CHAINCODE_SOURCE_DIR CHAINCODE_METADATA_DIR BUILD_OUTPUT_DIR",
    "release": "BUILD_OUTPUT_DIR RELEASE_OUTPUT_DIR",
    "run": "BUILD_OUTPUT_DIR RUN_METADATA_DIR",
}


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived: unwind through every cleanup, then exit."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def main(step: str, argv: list[str], bin_dir: Path | None) -> int:
    log = StepLog(step)
    expected = USAGE[step].split()
    if len(argv) != len(expected):
        log.error(f"usage: {step} {USAGE[step]} (got {len(argv)} arguments)")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    # detect must stay light: it runs for every install, so step modules load only when used.
    module = importlib.import_module(f"k8scc.steps.{step}")
    handler: Callable[[list[str], StepLog, Path | None], int] = module.execute
    try:
        return handler(argv, log, bin_dir)
    except K8sccError as error:
        log.error(str(error))
        return 1
    except Terminated as stop:
        log.info(f"stopped by {stop}")
        return 143
    except Exception as error:
        log.error(f"internal error: {type(error).__name__}: {error}")
        if log.debug:
            # Imported here: traceback pulls in linecache and tokenize, which detect, run for
            # every install, should not pay for.
            import traceback  # noqa: PLC0415

            for line in traceback.format_exc().splitlines():
                log.info(line)
        return 1


def entry(step: str) -> None:
    """What the builder's bin/<step> scripts call."""
    bin_dir = Path(sys.argv[0]).resolve().parent
    sys.exit(main(step, sys.argv[1:], bin_dir))
