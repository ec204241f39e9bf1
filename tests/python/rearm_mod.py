"""Functions for rearm.py (line markers are looked up)."""
LAST_CHILD = []


def parent(a):
    b = a + 1  # P1

    def child(c):
        d = c * 2  # C1
        return d + 1  # C2

    LAST_CHILD.append(child)
    e = child(b)  # P2
    return e


def multi(x):
    y = x + 1  # M1
    z = y * 2  # M2
    w = z - 3  # M3
    return w
