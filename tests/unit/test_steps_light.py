"""detect runs for every install: it must not load the Kubernetes client."""

from __future__ import annotations

import subprocess
import sys

import pytest

from k8scc.log import MAX_LINE, StepLog

pytestmark = pytest.mark.unit


def test_detect_does_not_import_the_kubernetes_client() -> None:
    probe = (
        "import sys, k8scc.steps, k8scc.steps.detect; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightkube', 'httpx2')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_log_lines_stay_far_below_the_peers_64_kib_limit() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    sink = Sink()
    log = StepLog("run", chaincode="cc:1", pod="cc-1", stream=sink)  # type: ignore[arg-type]
    log.output("x" * 200_000)
    log.error("first\nsecond\n\nthird")
    lines = sink.text.splitlines()
    assert len(lines) == 2
    assert len(lines[0]) <= MAX_LINE and lines[0].endswith("[line cut]")
    assert lines[1] == "k8scc run [chaincode=cc:1 pod=cc-1]: error: first second third"
