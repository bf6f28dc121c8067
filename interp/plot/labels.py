"""Make user text safe and visible in a Plotly figure.

Plotly renders a subset of HTML (``<b>``, ``<br>``, ``<a href>``, ``<span style>``…) in every
text it draws: titles, tick labels, hover labels, cell text, legend entries. A token such as
``<script>alert(1)</script>`` or ``<b>`` must show as literal text, so every string that comes
from the user goes through :func:`escape_label` (``&``, ``<``, ``>`` become entities, which
Plotly decodes back to characters only *after* it has split out the tags). Quotes are left
alone: Plotly decodes only a handful of named entities and would show ``&quot;`` verbatim.

Token strings additionally go through :func:`token_label`, which makes whitespace visible:
a newline shows as ``\\n``, a tab as ``\\t``, leading and trailing spaces as ``␣`` (SVG would
swallow them), other control characters as ``\\xNN`` and the empty token as ``∅``.

Example:
    >>> from interp.plot.labels import escape_label, token_label
    >>> escape_label("<script>alert(1)</script>")
    '&lt;script&gt;alert(1)&lt;/script&gt;'
    >>> token_label(" the")
    '␣the'
    >>> token_label("\\n")
    '\\\\n'
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

VISIBLE_SPACE = "␣"
EMPTY_TOKEN = "∅"
ELLIPSIS = "…"
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape_label(text: Any) -> str:
    """HTML-escape ``&``, ``<`` and ``>`` so Plotly shows ``text`` literally.

    Args:
        text: Any object; it is converted with ``str`` first.

    Returns:
        The escaped string.

    Example:
        >>> escape_label("a <b>bold</b> & co")
        'a &lt;b&gt;bold&lt;/b&gt; &amp; co'
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def visible_whitespace(token: str) -> str:
    """Spell out whitespace and control characters of a token (no escaping).

    Args:
        token: A token string as the tokenizer decoded it.

    Returns:
        The token with newlines/tabs as ``\\n``/``\\t``, edge spaces as ``␣``, other control
        characters as ``\\xNN``; ``∅`` for the empty string.

    Example:
        >>> visible_whitespace("  hi there ")
        '␣␣hi there␣'
    """
    if token == "":
        return EMPTY_TOKEN
    out = []
    for ch in token:
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out)
    stripped = text.strip(" ")
    if not stripped:
        return VISIBLE_SPACE * len(text)
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" "))
    return VISIBLE_SPACE * lead + stripped + VISIBLE_SPACE * trail


def shorten(text: str, max_len: int | None) -> str:
    """Cut ``text`` to at most ``max_len`` characters, ending in ``…`` when cut.

    Example:
        >>> shorten("interpretability", 6)
        'inter…'
    """
    if max_len is None or len(text) <= max_len:
        return text
    return text[: max(max_len - 1, 0)] + ELLIPSIS


def token_label(token: Any, max_len: int | None = None) -> str:
    """A token made visible, shortened to ``max_len`` characters, then HTML-escaped.

    Args:
        token: A token string (anything else is converted with ``str``).
        max_len: Optional length cap, applied before escaping so no entity is cut in half.

    Returns:
        A string safe to hand to Plotly.

    Example:
        >>> token_label(" <b>")
        '␣&lt;b&gt;'
    """
    return escape_label(shorten(visible_whitespace(str(token)), max_len))


def token_labels(tokens: Iterable[Any], max_len: int | None = None) -> list[str]:
    """:func:`token_label` over a sequence.

    Example:
        >>> token_labels(["a", " a"])
        ['a', '␣a']
    """
    return [token_label(t, max_len) for t in tokens]


def format_value(v: float) -> str:
    """A number as hover text: four significant digits, ``nan`` kept.

    Example:
        >>> format_value(0.123456)
        '0.1235'
    """
    return f"{v:.4g}"


def hover_lines(item: Any) -> list[str]:
    """Escaped hover lines for one extra hover item.

    ``item`` may be ``None`` (nothing), a string (one line, shown as a token), a
    ``(token, value)`` pair, or a sequence of strings / pairs (a top-k list, one line each).

    Example:
        >>> hover_lines([(" cat", 0.5), ("<dog>", 0.25)])
        ['␣cat  0.5', '&lt;dog&gt;  0.25']
    """
    if item is None:
        return []
    if isinstance(item, str):
        return [token_label(item)]
    if _is_pair(item):
        return [f"{token_label(item[0])}  {format_value(float(item[1]))}"]
    if isinstance(item, Sequence) or hasattr(item, "__iter__"):
        return [line for sub in item for line in hover_lines(sub)]
    return [escape_label(item)]


def _is_pair(item: Any) -> bool:
    if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
        return False
    try:
        float(item[1])
    except (TypeError, ValueError):
        return False
    return not isinstance(item[1], str)
