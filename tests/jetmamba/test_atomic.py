"""Artifacts appear whole or not at all."""

from __future__ import annotations

import pytest

from jetmamba.atomic import atomic_directory


def test_success_replaces_previous(tmp_path):
    target = tmp_path / "art"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "new").write_text("new")
        assert not (target / "new").exists()  # nothing visible until the end
    assert (target / "new").read_text() == "new" and not (target / "old").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_previous_and_leaves_nothing(tmp_path, exc):
    target = tmp_path / "art"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(exc):
        with atomic_directory(target) as tmp:
            (tmp / "half").write_text("half")
            raise exc()
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_permissions_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "art") as tmp:
            f = tmp / "f"
            f.write_text("x")
            f.chmod(0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "art").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "art" / "f").stat().st_mode) == 0o644


def test_atomic_write_text(tmp_path, monkeypatch):
    from jetmamba.atomic import atomic_write_text

    target = tmp_path / "sub" / "table.md"
    atomic_write_text(target, "one\n")
    assert target.read_text() == "one\n"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("jetmamba.atomic.os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "two\n")
    assert target.read_text() == "one\n" and sorted(p.name for p in target.parent.iterdir()) == ["table.md"]
