"""Where a member of a JSON object lies, read from either end of the object's bytes, never parsing the whole.

Sans-I/O (Issue 11 item 1): a child's answer too large to parse cheaply is known by its first and last few KiB. The
Python SDK writes `"id"` first, the TypeScript SDK last; each scanner reads from its own end, so a window that cuts a
string in half is never misread (a string whose other quote lies outside the window ends the search: None).
Keys are compared as written: an escaped key ("\\u0069d") is not found, and the caller falls back to parsing.
"""

Span = tuple[int, int]

_QUOTE, _BACKSLASH, _COLON, _COMMA = 0x22, 0x5C, 0x3A, 0x2C
_OPEN, _CLOSE, _WHITESPACE = frozenset(b"{["), frozenset(b"}]"), frozenset(b" \t\r\n")


def head_member(data: bytes, key: bytes, start: int = 0) -> int | None:
    """Where the value of member `key` of the object opening at `start` (after whitespace) begins; None if unseen.

    Only the object's own members count: a `key` nested in one of its values is never taken.
    """
    start = skip_space(data, start)
    if start >= len(data) or data[start] != ord("{"):
        return None
    depth, i, n, expect_key = 1, start + 1, len(data), True
    while i < n:
        c = data[i]
        if c == _QUOTE:
            end = _string_end(data, i)
            if end < 0:
                return None
            if depth == 1 and expect_key:
                colon = skip_space(data, end + 1)
                if colon >= n or data[colon] != _COLON:
                    return None
                if data[i + 1 : end] == key:
                    value = skip_space(data, colon + 1)
                    return value if value < n else None
                i, expect_key = colon + 1, False
                continue
            i = end + 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth <= 0:
                return None
        elif c == _COMMA and depth == 1:
            expect_key = True
        i += 1
    return None


def tail_member(data: bytes, key: bytes, depth: int = 1) -> Span | None:
    """Where the value of member `key` lies in `data`, the end of a JSON value; None if unseen.

    `depth` 1 is the outermost object; 2 the first object closed before its end (in an answer, its `result`).
    Read backwards, so a window that starts mid-string is never misread; leaving that object ends the search.
    """
    level, i, value_end, colon, after = 0, len(data) - 1, -1, -1, 0
    while i >= 0:
        c = data[i]
        if c == _QUOTE:
            start = _string_start(data, i)
            if start < 0:
                return None
            if level == depth and after == _COLON and data[start + 1 : i] == key:
                return _trim(data, colon + 1, value_end)
            i, after = start - 1, _QUOTE
            continue
        if c in _CLOSE:
            level += 1
            if level == depth:
                value_end = i
        elif c in _OPEN:
            level -= 1
            if level < depth:
                return None
        elif level == depth and c == _COMMA:
            value_end = i
        elif level == depth and c == _COLON:
            colon = i
        if c not in _WHITESPACE:
            after = c
        i -= 1
    return None


def scalar_span(data: bytes, start: int | None) -> Span | None:
    """The span of the scalar value (string, number, literal) starting at `start`, if it ends within `data`."""
    if start is None or start >= len(data):
        return None
    if data[start] == _QUOTE:
        end = _string_end(data, start)
        return (start, end + 1) if end >= 0 else None
    end = start
    while end < len(data) and data[end] not in b",}] \t\r\n":
        end += 1
    return (start, end) if end < len(data) else None


def skip_space(data: bytes, i: int) -> int:
    """The first index from `i` that is not JSON whitespace (len(data) if none)."""
    while i < len(data) and data[i] in _WHITESPACE:
        i += 1
    return i


def _string_end(data: bytes, start: int) -> int:
    """The index of the quote closing the string opened at `start`, or -1 if it is not in `data`."""
    j = start + 1
    while (j := data.find(b'"', j)) >= 0:
        if _escapes_before(data, j) % 2 == 0:
            return j
        j += 1
    return -1


def _string_start(data: bytes, end: int) -> int:
    """The index of the quote opening the string closed at `end`, or -1 if it is not in `data`."""
    j = end
    while (j := data.rfind(b'"', 0, j)) >= 0:
        run = _escapes_before(data, j)
        if run == j:
            return -1  # the backslashes reach the window's start: their parity is unknown
        if run % 2 == 0:
            return j
    return -1


def _escapes_before(data: bytes, index: int) -> int:
    k = index - 1
    while k >= 0 and data[k] == _BACKSLASH:
        k -= 1
    return index - 1 - k


def _trim(data: bytes, start: int, end: int) -> Span | None:
    while start < end and data[start] in _WHITESPACE:
        start += 1
    while end > start and data[end - 1] in _WHITESPACE:
        end -= 1
    return (start, end) if start < end else None
