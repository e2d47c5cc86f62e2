"""docs/configuration.md and docs/install.md stay in step with what k8scc accepts and prints."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8scc import config, doctor
from k8scc.errors import K8sccError

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SECTIONS = {
    "peer",
    "transfer",
    "buildCache",
    "platforms",
    "platforms.golang",
    "builder",
    "builder.resources",
    "chaincode",
    "chaincode.resources",
    "chaincode.logging",
    "timeouts",
    "pod",
}


def known_keys(section: str) -> list[str]:
    """The keys config.parse accepts in `section`, as its own error message lists them."""
    content: dict[str, Any] = {"zzUnknown": 1}
    for part in reversed(section.split(".") if section else []):
        content = {part: content}
    with pytest.raises(K8sccError) as raised:
        config.parse(yaml.safe_dump(content))
    found = re.search(r"unknown key \(known: ([^)]*)\)", str(raised.value))
    assert found, str(raised.value)
    return found.group(1).split(", ")


def leaf_fields(section: str = "") -> list[str]:
    fields: list[str] = []
    for key in known_keys(section):
        path = f"{section}.{key}".lstrip(".")
        if path in SECTIONS:
            fields += leaf_fields(path)
        elif section != "platforms":
            fields.append(path)
    return fields


def test_every_field_is_documented() -> None:
    text = DOC.read_text()
    fields = leaf_fields()
    assert len(fields) >= 30
    for field in fields:
        documented = field.replace("platforms.golang.", "platforms.<p>.")
        assert f"`{documented}`" in text, field


def test_the_complete_example_is_valid() -> None:
    text = DOC.read_text()
    example = text.split("## Complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    parsed = config.parse(example)
    assert parsed.namespace == "fabric"
    assert set(parsed.platforms) == {"golang", "node", "k8s"}
    assert parsed.platforms["golang"].build_env["GOSUMDB"] == "off"
    assert parsed.stuck_timeout == 20.0


INSTALL = DOC.parent / "install.md"
SOURCE = Path(config.__file__).parent
PLACEHOLDER = re.compile(r"<[^<>]+>")


def install_section(title: str) -> str:
    return INSTALL.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def message_patterns() -> list[re.Pattern[str]]:
    """Every string and f-string in k8scc's source with enough fixed text to identify a message,
    as a regex (each interpolated part matches anything); each may be followed by the suffixes
    k8scc appends to a message: `: <reason>` (Kubernetes' answer) and ` (<path>)`."""
    patterns = []
    for file in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts: list[str | None] = [node.value]
            elif isinstance(node, ast.JoinedStr):
                parts = [
                    v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else None
                    for v in node.values
                ]
            else:
                continue
            if sum(len(p) for p in parts if p) < 8:
                continue
            regex = "".join(".+" if p is None else re.escape(p) for p in parts)
            patterns.append(re.compile(rf"{regex}(: .+| \(.+\))?"))
    return patterns


def troubleshooting_lines() -> list[str]:
    section = install_section("Troubleshooting")
    return re.findall(r"^#### `error: (.*)`$", section, re.MULTILINE)


def test_every_troubleshooting_line_is_a_message_k8scc_prints() -> None:
    lines = troubleshooting_lines()
    assert len(lines) >= 20
    patterns = message_patterns()
    for line in lines:
        if line == "<path>: <key>: <problem>":
            continue  # assembled from parts at run time: checked below
        sample = PLACEHOLDER.sub("X", line)
        assert any(p.fullmatch(sample) for p in patterns), line


def test_the_configuration_error_line_matches_what_k8scc_prints() -> None:
    assert "<path>: <key>: <problem>" in troubleshooting_lines()
    with pytest.raises(K8sccError) as raised:
        config.parse("transfer: {claimNme: x}\n", Path("/etc/k8scc/k8scc.yaml"))
    assert re.fullmatch(r".+: .+: .+", str(raised.value))
    assert str(raised.value).startswith("/etc/k8scc/k8scc.yaml: transfer.claimNme: unknown key")


def mapping_table(title: str) -> dict[str, list[str]]:
    """Rows of the section's table: first column -> the k8scc keys named in the second."""
    rows: dict[str, list[str]] = {}
    for line in install_section(title).splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 3 or cells[1] in ("k8scc", "---"):
            continue
        rows[cells[0]] = re.findall(r"`([^`]+)`", cells[1])
    return rows


def is_config_key(key: str) -> bool:
    key = re.sub(r"^platforms\.(golang|node|java)\.", "platforms.golang.", key)
    return any(key == f or key.startswith(f"{f}.") for f in leaf_fields())


@pytest.mark.parametrize(
    "title", ["Migrating from hlfabric-k8scc", "Migrating from fabric-builder-k8s"]
)
def test_migration_tables_name_real_configuration_keys(title: str) -> None:
    rows = mapping_table(title)
    assert len(rows) >= 8
    for old, keys in rows.items():
        for key in keys:
            assert is_config_key(key), (old, key)


def test_every_hlfabric_k8scc_key_is_mapped() -> None:
    old_keys = {
        k.strip("`") for k in mapping_table("Migrating from hlfabric-k8scc") if k.startswith("`")
    }
    assert old_keys == {
        "images.golang",
        "images.node",
        "images.java",
        "transfer_volume.path",
        "transfer_volume.claim",
        "builder.resources.memory_limit",
        "builder.resources.cpu_limit",
        "launcher.resources.memory_limit",
        "launcher.resources.cpu_limit",
    }


def test_the_doctor_checks_are_the_ones_listed() -> None:
    section = install_section("5. Verify with `k8scc doctor`")
    listed = re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)
    results = doctor.diagnose(Path("/nonexistent/k8scc.yaml"), None, {})
    assert listed == [r.check for r in results]
