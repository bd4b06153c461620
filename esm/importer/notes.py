"""What an import could not translate, one line each, in the order it was found."""

from __future__ import annotations

__all__ = ["Notes"]


class Notes:
    """Untranslated items: where in the input, and what was not carried over and why."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        line = f"{where}: {what}" if where else what
        if line not in self._lines:
            self._lines.append(line)

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)
