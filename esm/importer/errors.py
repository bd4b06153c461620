"""What ends an import without output."""

from __future__ import annotations

from esm.errors import EsmError

__all__ = ["ImportFailure"]


class ImportFailure(EsmError):
    """Nothing could be imported: the file cannot be read or parsed, or holds no mapping
    esm can run. The message is one line; `untranslated` lists what was found and why it
    was not carried over."""

    def __init__(self, message: str, untranslated: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.untranslated = untranslated
