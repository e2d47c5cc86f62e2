"""All four steps invoked exactly as the peer invokes them, against the test bed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod, Secret

from tests.support.builder import Builder, package_source
from tests.support.fakepeer import FakePeer

pytestmark = [pytest.mark.cluster]


def leftovers(admin: Client, namespace: str, transfer: Path) -> list[str]:
    pods = [p.metadata.name for p in admin.list(Pod, namespace=namespace)]  # type: ignore[union-attr]
    secrets = [s.metadata.name for s in admin.list(Secret, namespace=namespace)]  # type: ignore[union-attr]
    return (
        [f"pod/{p}" for p in pods]
        + [f"secret/{s}" for s in secrets]
        + [f"dir/{d.name}" for d in transfer.iterdir()]
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "no-tls"])
def test_golang_build_release_run(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path, tls: bool
) -> None:
    source, metadata = package_source("golang", tmp_path)
    detected = builder.run("detect", source, metadata)
    assert detected.returncode == 0, detected.stderr
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    assert (output / "output" / "chaincode").is_file()
    info = json.loads((output / "k8scc-build.json").read_text())
    assert info["platform"] == "golang"
    assert "| " in built.stderr  # the builder pod's own output reached the log
    release = tmp_path / "release"
    release.mkdir()
    released = builder.run("release", output, release)
    assert released.returncode == 0, released.stderr
    assert (release / "statedb" / "couchdb" / "indexes").is_dir()
    assert leftovers(admin, namespace, builder.transfer) == []

    with FakePeer(tls=tls) as peer:
        chaincode_id = "asset_1.0:" + "ab" * 32
        run_meta = tmp_path / "run"
        run_meta.mkdir()
        (run_meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        run = builder.start("run", output, run_meta)
        try:
            assert peer.wait_registered(chaincode_id, timeout=120), run.stderr
            # The chaincode's own output streams into the log while it runs.
            assert run.wait_for_line("| asset-transfer: starting go chaincode", 30), run.stderr
            assert run.process.poll() is None
        finally:
            stopped = time.monotonic()
            code = run.stop()
        assert time.monotonic() - stopped < 5
        assert code != 0
    deadline = time.monotonic() + 10
    while leftovers(admin, namespace, builder.transfer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(admin, namespace, builder.transfer) == []
