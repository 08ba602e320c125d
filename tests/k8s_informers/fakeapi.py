"""Moved to tests/support/kubeapi.py (shared with the lifecycle and end-to-end tests)."""

from __future__ import annotations

from support.kubeapi import FakeApi, Logged, gone_status, merge_patch

__all__ = ["FakeApi", "Logged", "gone_status", "merge_patch"]
