"""Your tests of your flows' transformations: copy this pattern.

Test the logic, not Prefect: call a task's function through `.fn` with a small input
and compare with the exact output you expect. Small, exact and fast beats large and
approximate. Run them with `make test` (or `.venv/bin/python -m pytest`).
"""

from example_flow import build_greeting


def test_build_greeting_repeats_the_greeting():
    """It repeats the greeting, separated by single spaces."""
    assert build_greeting.fn("Ada", 2) == "Hello, Ada! Hello, Ada!"


def test_build_greeting_once():
    """With repeat=1 it is one greeting, with no stray space."""
    assert build_greeting.fn("world", 1) == "Hello, world!"
