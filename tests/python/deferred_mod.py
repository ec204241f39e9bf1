"""Imported only after a breakpoint names it."""
VERSION = 1


def compute(x):
    y = x * VERSION  # BP:compute
    return y
