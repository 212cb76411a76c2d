"""Secrets written in a manifest: refused before any validation, by field name and by URLs that carry credentials.

A problem names the field and says what to do instead; it never repeats the value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from shared.manifest.model import Loc, dotted

SECRET_FIELDS = frozenset({
    "api_key", "key", "apikey", "secret", "password", "token", "connection_string",
    "access_token", "client_secret", "account_key", "sas_token", "subscription_key", "authorization",
})
_SECRET_QUERY = SECRET_FIELDS | {"code", "sig"}
_SETTING_FIELDS = frozenset({"key_setting", "api_key_setting"})
NATIVE_KEY_ADVICE = ("a key must never be written in a manifest; store it in an environment variable or app "
                     "setting and name that setting in teacher.key_setting (for example "
                     "`key_setting: TEACHER_API_KEY`)")


def find_secrets(doc: Any, advice: str) -> list[str]:
    """One problem per secret written in `doc`: a filled secret-named field, a setting name that is really a
    key, or a URL carrying a password or key. Each names the field and gives `advice`, never the value."""
    problems = []
    for loc, value in _entries(doc, ()):
        name = _normal(loc[-1]) if isinstance(loc[-1], str) else ""
        if isinstance(loc[-1], str) and _looks_like_key(loc[-1]):
            where = dotted(loc[:-1]) or "top level"
            problems.append(f"{where}: a field name here looks like a key; {advice}")
        elif name in SECRET_FIELDS and _filled(value):
            problems.append(f"{dotted(loc)}: {advice}")
        elif name in _SETTING_FIELDS and isinstance(value, str) and _looks_like_key(value):
            problems.append(f"{dotted(loc)}: this looks like a key, not the NAME of a setting; {advice}")
        elif isinstance(value, str) and (carried := _url_credential(value)):
            problems.append(f"{dotted(loc)}: this URL carries {carried}; remove it from the URL; {advice}")
    return problems


def _entries(node: Any, loc: Loc) -> Iterator[tuple[Loc, Any]]:
    """Every (location, value) below a mapping or list, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        child = (*loc, key if isinstance(node, list) else str(key))
        yield child, value
        yield from _entries(value, child)


def _normal(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _filled(value: Any) -> bool:
    return bool(value.strip()) if isinstance(value, str) else value not in (None, {}, [])


def _looks_like_key(name: str) -> bool:
    """Setting names are words joined by `_`; a long run of letters and digits is a key pasted by mistake."""
    mixed = any(c.isdigit() for c in name) and any(c.isalpha() for c in name)
    return len(name) >= 24 and "_" not in name and mixed


def _url_credential(text: str) -> str | None:
    """What credential a URL carries (a password, or a key-like query parameter), or None."""
    if "://" not in text:
        return None
    try:
        parts = urlsplit(text.strip())
    except ValueError:
        return None
    if parts.password:
        return "a password"
    names = [name for name, _ in parse_qsl(parts.query) if _normal(name) in _SECRET_QUERY]
    return f"a key (query parameter `{names[0]}`)" if names else None
