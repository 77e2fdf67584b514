"""Conditional requests (RFC 9110 §13) on resources with a revision: the strong ETag of a
revision and the `If-Match` of a write.

A revision n (1, 2, ...) has the entity tag `"n"`. `If-Match` is `*` (any current
representation: the resource must exist) or a comma-separated list of entity tags; the write
goes ahead only when the resource's current tag is in the list, compared strongly (a weak tag
`W/"n"`, or a tag that is not a revision, never matches). A header that is neither is malformed
(400); several `If-Match` lines are one list.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.admin_models import invalid

MAX_REVISION: Final = 2**63 - 1
_REVISION_TAG: Final = re.compile(r"[1-9][0-9]{0,18}")
_LIST_ITEM: Final = re.compile(r'[ \t]*(?:(W/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|\Z)')
"""One element of an entity-tag list: optional whitespace, an optional (possibly weak) tag, up
to the next comma or the end. Empty elements are allowed, as in every HTTP list."""

IF_MATCH_PARAMETER: Final[dict[str, Any]] = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": (
        'Replace only this revision: the ETag of a read (`"3"`), a list of them, or `*` '
        "(the tenant must exist). Otherwise 412 Precondition Failed with the current ETag; "
        "a malformed value is 400."
    ),
    "schema": {"type": "string"},
}
"""The OpenAPI parameter of a write honouring `If-Match`."""
ETAG_HEADER: Final[dict[str, Any]] = {
    "ETag": {
        "description": 'The revision of the tenant\'s configuration, a strong tag: `"3"`',
        "schema": {"type": "string"},
    }
}
"""The OpenAPI `headers` of a response carrying the resource's ETag."""
CURRENT_ETAG_HEADER: Final[dict[str, Any]] = {
    "ETag": {
        "description": (
            "The ETag of the configuration's current revision, which the write did not find "
            "(If-Match, or a change during a tenant-admin's write); absent when the tenant "
            "does not exist"
        ),
        "schema": {"type": "string"},
    }
}
"""The OpenAPI `headers` of a 412: the current ETag, to read again from."""


def strong_etag(revision: int) -> str:
    """The entity tag of a revision: strong and quoted, `"7"`."""
    return f'"{revision}"'


def etag_headers(revision: int) -> dict[str, str]:
    """`{"ETag": ...}` for a known revision; nothing for 0 (a store without revisions)."""
    return {"ETag": strong_etag(revision)} if revision > 0 else {}


@dataclass(frozen=True)
class IfMatch:
    """A write's `If-Match`: `*`, or the revisions its strong tags name (possibly none)."""

    any: bool
    revisions: frozenset[int]

    def holds(self, current: int) -> bool:
        """Whether the condition holds for the current revision (0: the resource does not
        exist, and then nothing matches, not even `*`)."""
        return current > 0 and (self.any or current in self.revisions)

    @property
    def single(self) -> int | None:
        """The one revision a write must find, when the header names exactly one."""
        if self.any or len(self.revisions) != 1:
            return None
        (revision,) = self.revisions
        return revision


def if_match(values: Sequence[str]) -> IfMatch | None:
    """The condition of the request's `If-Match` lines; None without one. A malformed value is
    a 400 (ValidationError naming `If-Match`)."""
    if not values:
        return None
    text = ", ".join(values).strip()
    if text == "*":
        return IfMatch(any=True, revisions=frozenset())
    tags, revisions, position = 0, set(), 0
    while position < len(text):
        item = _LIST_ITEM.match(text, position)
        if item is None or item.end() == position:
            break
        position = item.end()
        weak, tag = item.groups()
        if tag is None:
            continue
        tags += 1
        if not weak and _REVISION_TAG.fullmatch(tag) and int(tag) <= MAX_REVISION:
            revisions.add(int(tag))
    if position < len(text) or tags == 0:
        raise invalid([(("If-Match",), 'must be * or a list of entity tags, e.g. "3" or "3", "4"')])
    return IfMatch(any=False, revisions=frozenset(revisions))
