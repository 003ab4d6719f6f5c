"""Building and caching the compiled PE-MIU library (facepriv.protections.pe_native_build)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facepriv.protections import pe_native_build


@pytest.fixture
def sources(tmp_path, monkeypatch) -> Path:
    """A copy of the kernel sources and an empty cache folder, both under tmp_path."""
    src = tmp_path / "pemiu_native"
    shutil.copytree(pe_native_build.C_SOURCE_DIR, src)
    monkeypatch.setattr(pe_native_build, "C_SOURCE_DIR", src)
    monkeypatch.setattr(pe_native_build, "C_SOURCE_FILE", src / "pemiu.c")
    monkeypatch.setenv("FACEPRIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", shutil.which("cc") or shutil.which("gcc") or "cc")
    return src


def _fake_builds(monkeypatch) -> list[Path]:
    """Record the builds instead of compiling: each writes a placeholder library and flags file."""
    built: list[Path] = []

    def fake(out: Path, cc: str, flag_sets: list[list[str]]) -> bool:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"")
        out.with_suffix(".flags").write_text(" ".join(flag_sets[0]), encoding="utf-8")
        built.append(out)
        return True

    monkeypatch.setattr(pe_native_build, "_build", fake)
    return built


def test_a_cached_build_is_reused_and_an_edited_kernel_gets_a_new_name(sources, monkeypatch):
    built = _fake_builds(monkeypatch)
    first = pe_native_build.build_or_reuse()
    assert first is not None and first[0] == built[0]
    assert "-O2" in first[1]  # how it was built, for the log
    assert pe_native_build.build_or_reuse() == first and len(built) == 1  # reused, not rebuilt
    header = sources / "avx2_solver.h"  # any part of the kernel, not only pemiu.c
    header.write_text(header.read_text(encoding="utf-8") + "\n/* edited */\n", encoding="utf-8")
    second = pe_native_build.build_or_reuse()
    assert second is not None and len(built) == 2 and second[0] != first[0]


def test_missing_compiler_or_source_gives_none_with_a_reason(sources, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level("WARNING", logger=pe_native_build.log.name):
        assert pe_native_build.build_or_reuse() is None
    assert "building the PE-MIU native comparator failed" in caplog.text
    caplog.clear()
    (sources / "pemiu.c").unlink()
    with caplog.at_level("WARNING", logger=pe_native_build.log.name):
        assert pe_native_build.build_or_reuse() is None
    assert "pemiu.c" in caplog.text and "missing" in caplog.text


def test_a_failed_build_leaves_no_library_behind(sources, monkeypatch, caplog, tmp_path):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` program to stand in for a failing compiler")
    monkeypatch.setenv("CC", false)
    with caplog.at_level("WARNING", logger=pe_native_build.log.name):
        assert pe_native_build.build_or_reuse() is None
    assert "failed" in caplog.text
    assert not list((tmp_path / "cache").rglob("*.so"))  # nothing half-written for a later run to load


def test_native_code_only_for_an_identified_cpu():
    assert all("-march=native" not in flags for flags in pe_native_build._flag_sets(""))
    sets = pe_native_build._flag_sets("model name : some CPU")
    assert "-march=native" in sets[0] and all("-ffast-math" not in f for f in sets)
