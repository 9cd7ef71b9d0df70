"""difflab's glibc malloc setting: applied on glibc, and left alone where the user chose malloc's settings."""

import ctypes.util
import sys

import pytest

from difflab import allocator

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or "libc" not in (ctypes.util.find_library("c") or ""),
                           reason="glibc only")


@glibc
def test_keeps_freed_memory_on_glibc(monkeypatch):
    for name in (*allocator.USER_SETTINGS, allocator.OPT_OUT):
        monkeypatch.delenv(name, raising=False)
    assert allocator.keep_freed_memory()


@pytest.mark.parametrize("name", [*allocator.USER_SETTINGS, allocator.OPT_OUT])
def test_user_settings_win(monkeypatch, name):
    monkeypatch.setenv(name, "1")
    assert not allocator.keep_freed_memory()
