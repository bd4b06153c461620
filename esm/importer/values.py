"""Values of an import: text that may hold `${VAR}` references esm expands when it loads
esm.yaml, and the variables behind them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NO_VALUE", "Text", "Unquoted", "Variable", "concat", "variable_name"]


@dataclass(frozen=True)
class Variable:
    """A value the importer could not know, left for esm's environment to supply."""

    name: str
    origin: str
    """What it stands for, as the template wrote it (`!GetAtt MyStream.Arn`)."""
    sample: str | None = None
    """A value of the right shape, used only to check the rest of the output; None when no
    shape is known (the whole of an ARN of an unknown service)."""


@dataclass(frozen=True)
class Text:
    """A string with variables in it: literal parts and `Variable`s, in order."""

    parts: tuple[str | Variable, ...] = field(default=())

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(part for part in self.parts if isinstance(part, Variable))

    @property
    def sole_variable(self) -> Variable | None:
        """The variable when the text is nothing else (so it may stand for a number)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Variable):
            return self.parts[0]
        return None

    def literal_text(self) -> str:
        """The literal parts only (for names derived from a partly known value)."""
        return "".join(part for part in self.parts if isinstance(part, str))

    def rendered(self) -> str:
        """As esm.yaml writes it: `${NAME}` for each variable and `$$` for a literal `$`,
        since esm expands the whole file's text before it parses it."""
        return "".join(
            f"${{{part.name}}}" if isinstance(part, Variable) else part.replace("$", "$$")
            for part in self.parts
        )

    def sampled(self) -> str | None:
        """With each variable replaced by its sample; None if one has none."""
        pieces: list[str] = []
        for part in self.parts:
            if isinstance(part, Variable):
                if part.sample is None:
                    return None
                pieces.append(part.sample)
            else:
                pieces.append(part)
        return "".join(pieces)


class _NoValue:
    """`AWS::NoValue`: the property is removed, as CloudFormation removes it."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


def concat(*pieces: str | Text | Variable) -> str | Text:
    """The pieces joined: a plain str when no variable is left in them."""
    parts: list[str | Variable] = []
    for piece in pieces:
        items = piece.parts if isinstance(piece, Text) else (piece,)
        for item in items:
            if isinstance(item, str) and parts and isinstance(parts[-1], str):
                parts[-1] += item
            elif item != "":
                parts.append(item)
    if all(isinstance(part, str) for part in parts):
        return "".join(part for part in parts if isinstance(part, str))
    return Text(tuple(parts))


_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")


def variable_name(*words: str) -> str:
    """An environment variable's name from a reference's words (`MyStream`, `Arn` become
    MYSTREAM_ARN): letters, digits and `_`, not starting with a digit."""
    name = "_".join(_NOT_NAME.sub("_", word).strip("_") for word in words if word).upper()
    name = re.sub(r"_+", "_", name) or "VALUE"
    return f"_{name}" if name[0].isdigit() else name


@dataclass(frozen=True)
class Unquoted:
    """A variable standing for a number or a boolean (BatchSize, Enabled): written bare,
    `BatchSize: ${BATCH_SIZE}`, so that the value esm substitutes is read as one."""

    variable: Variable
