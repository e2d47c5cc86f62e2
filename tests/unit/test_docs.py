"""docs/configuration.md stays in step with the configuration k8scc accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8scc import config
from k8scc.errors import K8sccError

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SECTIONS = {
    "peer",
    "transfer",
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
    assert set(parsed.platforms) == {"golang", "node"}
    assert parsed.platforms["golang"].build_env["GOSUMDB"] == "off"
    assert parsed.stuck_timeout == 20.0
