"""The numbered examples in docs/examples run as written: every ``bash`` block of every README, in
order, in one fresh directory per example (``../shared`` resolves there as it does from the
repository root), each block must exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(readme: Path, kind: str = "bash") -> list[str]:
    return [body for lang, body in FENCE.findall(readme.read_text(encoding="utf-8")) if lang == kind]


def test_every_example_has_runnable_blocks_and_is_listed():
    folders = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
    assert folders, "no examples"
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for folder in folders:
        assert re.fullmatch(r"\d\d-[a-z0-9-]+", folder.name), folder.name
        assert blocks(folder / "README.md"), f"{folder.name} has no bash block"
        assert f"({folder.name}/README.md)" in index, f"{folder.name} is not in the examples index"


def test_the_block_parser_sees_only_bash_blocks(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("text\n```bash\necho one\n```\n```console\n$ jetmamba build\n```\n```bash\necho two\n```\n")
    assert blocks(readme) == ["echo one\n", "echo two\n"]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_example_runs(example, tmp_path):
    import shutil

    from shared import shared_path

    readme = EXAMPLES / example / "README.md"
    for tool in re.findall(r"<!-- requires: (\S+) -->", readme.read_text(encoding="utf-8")):
        if shutil.which(tool) is None:
            pytest.skip(f"{example} needs {tool}, which is not on PATH")
    (tmp_path / "shared").symlink_to(shared_path())
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for i, body in enumerate(blocks(readme), 1):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 0, (
            f"{example}, bash block {i} exited {proc.returncode}:\n{body}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-3000:]}"
        )
