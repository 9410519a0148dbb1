"""The README's "Bring your own model" examples are the contract, not prose: each
preprocessing.json example parses as the manifest's Preprocessing, and the minimal agent
configuration validates as an AgentConfig."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import msgspec

from agent.config import config_from_data
from edgefleet.contract import Preprocessing

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Bring your own model")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


def test_every_preprocessing_example_is_a_valid_preprocessing() -> None:
    (block,) = _blocks("jsonc")
    examples: list[str] = []
    current = ""
    for line in block.splitlines():
        if line.startswith("//"):
            if current:
                examples.append(current)
            current = ""
        else:
            current += line
    examples.append(current)
    assert len(examples) == 3
    parsed = [msgspec.convert(json.loads(e), Preprocessing) for e in examples]
    assert [p.layout for p in parsed] == ["nchw", "nhwc", "nchw"]
    assert parsed[0].std == [0.229, 0.224, 0.225] and parsed[2].color == "gray"


def test_the_minimal_agent_config_validates() -> None:
    (block,) = _blocks("toml")
    config = config_from_data(tomllib.loads(block))
    assert config.device_id == "cam-01" and config.sink is not None
