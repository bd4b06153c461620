"""Example functions bundled with esm, used by `esm demo` and the tests."""
