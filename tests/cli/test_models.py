"""`tl models [PATTERN]` lists the backbones tl can train and marks those usable offline."""

from pathlib import Path

import torchvision

from tl.cli.main import main as tl_command


def listed(capsys, *args) -> tuple[int, dict[str, list[str]]]:
    """Exit code, and each section's lines by section title."""
    code = tl_command(["models", *args])
    sections, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line and not line.startswith(" ") and ": " in line:
            current = line.split(" (")[0]
            sections[current] = []
        elif line.startswith("  ") and current:
            sections[current].append(line.split())
    return code, sections


def test_models_matching_a_pattern_come_from_presets_torchvision_and_timm(capsys):
    code, sections = listed(capsys, "res*")
    assert code == 0
    for title in ("tl presets", "torchvision", "timm"):
        assert "resnet18" in [words[0] for words in sections[title]], title
    assert all(words[0].startswith("res") for s in sections.values() for words in s)


def test_the_shipped_efficientnet_lite0_is_marked_offline(capsys):
    _, sections = listed(capsys, "*lite0")
    assert ["efficientnet_lite0", "offline"] == sections["tl presets"][0][:2]


def test_torchvision_weights_in_torch_hubs_cache_are_marked_offline(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, before = listed(capsys, "resnet18")
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / Path(url).name).write_bytes(b"")
    _, after = listed(capsys, "resnet18")
    assert before["torchvision"] == [["resnet18", "download"]]
    assert after["torchvision"] == [["resnet18", "offline"]]
    assert after["tl presets"][0][:2] == ["resnet18", "offline"]


def test_a_pattern_that_matches_nothing_exits_non_zero(capsys):
    code, sections = listed(capsys, "no_such_model*")
    assert code == 1 and not any(sections.values())
