"""Imported only when the target is told to (`import`): breakpoints set before it exists."""


def late(n):
    doubled = n * 2  # BP:late
    return doubled
