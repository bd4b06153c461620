"""Lambda's FilterCriteria: the EventBridge pattern language, compiled once per mapping."""

from esm.filter.patterns import (
    MAX_FILTERS,
    MAX_PATTERN_CHARS,
    OPERATORS,
    FilterSource,
    RecordFilter,
    compile_filters,
)

__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "OPERATORS",
    "FilterSource",
    "RecordFilter",
    "compile_filters",
]
