"""The code the end-to-end agent tests put breakpoints in (line numbers are found through the
`# BP:` markers, so edits above them do not break the tests)."""


def checkout(order_id, amount):
    password = "hunter2-" + str(order_id)
    items = [order_id, amount, "widget"]
    meta = {"order": order_id, "currency": "EUR"}
    total = amount * 2  # BP:checkout
    return total


def blank_lines_below():
    x = 1

    # BP:nocode (a comment line: no code here)

    return x


def ping(seq):
    marker = "ping-%d" % seq  # BP:ping
    return marker
