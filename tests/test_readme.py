"""Every TOML block the README shows is a file that runs and meets its own expectations."""

from __future__ import annotations

import re
from pathlib import Path

from workbench import cli

README = Path(__file__).parent.parent / "README.md"


def toml_blocks() -> dict[str, str]:
    """The README's ```toml blocks, keyed by the file name each names on its first line."""
    blocks = re.findall(r"^```toml\n(.*?)^```$", README.read_text(), re.M | re.S)
    files = {}
    for block in blocks:
        first = block.splitlines()[0]
        assert first.startswith("# "), f"a README TOML block names no file: {first!r}"
        files[first[2:].strip()] = block
    return files


def test_the_readme_toml_blocks_run_and_meet_their_expectations(tmp_path, capsys):
    files = toml_blocks()
    assert len(files) >= 2
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    rc = cli.main(["run", str(tmp_path / "experiment.toml"), "--out", str(tmp_path / "out"),
                   "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out and out.count(" ok") == 6          # 2 arms x 3 seeds
