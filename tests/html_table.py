"""Reading an HTML page as a person does: the text of its table's cells and of its elements
by class, whether the page came from the renderer or from a browser's rendered DOM."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Cell:
    text: str
    classes: set[str]


@dataclass
class Page:
    headers: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    row_classes: list[set[str]] = field(default_factory=list)
    by_class: dict[str, list[str]] = field(default_factory=dict)
    """The text of every element with a class, by class, in document order."""
    by_tag: dict[str, list[str]] = field(default_factory=dict)
    """The text of every element, by tag, in document order."""

    def texts(self) -> list[list[str]]:
        return [[cell.text for cell in row] for row in self.rows]


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        # Open elements: tag, classes, and the text gathered inside each so far.
        self._open: list[tuple[str, set[str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = set((dict(attrs).get("class") or "").split())
        if tag == "tr":
            self.page.rows.append([])
            self.page.row_classes.append(classes)
        if tag in {"meta", "br", "link", "img", "input"}:
            return  # void elements hold no text
        self._open.append((tag, classes, []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, classes, parts = self._open.pop()
            text = " ".join("".join(parts).split())
            if self._open:
                self._open[-1][2].append("".join(parts))
            self._close(open_tag, classes, text)
            if open_tag == tag:
                return

    def _close(self, tag: str, classes: set[str], text: str) -> None:
        if tag == "th":
            self.page.headers.append(text)
        elif tag == "td" and self.page.rows:
            self.page.rows[-1].append(Cell(text, classes))
        self.page.by_tag.setdefault(tag, []).append(text)
        for name in classes:
            self.page.by_class.setdefault(name, []).append(text)

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][0] not in {"style", "script"}:
            self._open[-1][2].append(data)


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    # A header row is a <tr> too: keep only the rows that have cells.
    kept = [
        (row, classes)
        for row, classes in zip(reader.page.rows, reader.page.row_classes, strict=True)
        if row
    ]
    reader.page.rows = [row for row, _ in kept]
    reader.page.row_classes = [classes for _, classes in kept]
    return reader.page
