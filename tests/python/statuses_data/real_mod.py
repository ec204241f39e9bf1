"""Imported through a symlink (tests/python/statuses_data/link_mod.py -> real_mod.py)."""
MODULE_LEVEL = 1


def g(x):

    y = x + 1
    return y
