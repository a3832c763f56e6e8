"""Form bodies of the token, revocation, login and consent endpoints (application/x-www-form-urlencoded)."""

from urllib.parse import parse_qs


class BadForm(Exception):
    """A form body that is not one: a parameter given twice, or not UTF-8."""


def form_of(body: bytes, *, repeatable: frozenset[str] = frozenset()) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The single-valued parameters of a urlencoded body, and the repeatable ones as lists.

    Raises:
        BadForm: a parameter other than the repeatable ones given twice (RFC 6749 section 3.1), bad encoding.
    """
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadForm("the form is not UTF-8") from None
    single: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for key, values in parsed.items():
        if key in repeatable:
            lists[key] = values
        elif len(values) > 1:
            raise BadForm(f"{key} is given more than once")
        else:
            single[key] = values[0]
    return single, lists
