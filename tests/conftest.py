"""Shared pytest configuration: markers for tests that need outside programs or root."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root"))


def need_program(*names: str) -> None:
    """Skip the calling test (with the reason) when a program it drives is not installed."""
    for name in names:
        if shutil.which(name) is None and not os.path.exists(name):
            pytest.skip(f"{name} is not installed")
