"""Helpers shared by the suite's conftests and the benchmark scripts under tests/bench.

Pytest puts tests/ on sys.path (tests/conftest.py is imported in rootdir "prepend" mode), so
tests import `support.<module>`; tests/bench/_measure.py puts tests/ there for the scripts.
"""
