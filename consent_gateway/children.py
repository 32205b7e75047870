"""Children under 14 (PIPA Art. 22-2): the app marks them, behavioural categories need a guardian's consent.

The wrapped app knows its members' ages (본인인증); the gateway does not. The app tells the gateway in
one of two documented ways:

- the response header ``X-Consent-Child``, which the gateway reads and removes before the response
  leaves (``consume_child_header``):

  - ``X-Consent-Child: 1``: this visitor is under 14, with no guardian consent on record;
  - ``X-Consent-Child: 1; guardian="marketing analytics"``: under 14, and the legal representative's
    consent to those categories was obtained and recorded by the app;
  - ``X-Consent-Child: 0``: the app verified the visitor is 14 or older (clears an earlier mark);

- the Python call ``mark_child(scope, guardian=...)`` from inside the app, with the same meaning.

From then on ``restrict(granted, mark, behavioural)`` takes every behavioural category (marketing,
and any the site adds) out of the visitor's granted categories unless the guardian consented to it,
whatever the banner says; the policy matrix then refuses it (marketing cookies stripped, marketing
events dropped). The mark travels in its own signed cookie (``ChildCookieCodec``), so it holds on
every later request, and each receipt records it (``receipt_fields``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

from .consent import Consent
from .errors import ConsentGatewayError
from .settings import Settings
from .store.schema import receipt_columns_ddl as receipt_columns_ddl  # re-exported; the DDL lives in store/

HEADER = "x-consent-child"
HEADER_BYTES = HEADER.encode("latin-1")
SCOPE_KEY = "consent_gateway.child"
COOKIE_SALT = "consent-gateway.child.v1"
DEFAULT_BEHAVIOURAL = ("marketing",)
GUARDIAN_METHOD = "guardian"
"""The receipt method of a choice the legal representative made for the child."""

_CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_GUARDIAN = re.compile(r'^\s*guardian\s*=\s*(?:"([^"]*)"|([a-z0-9_ ,]*))\s*$', re.IGNORECASE)
MAX_HEADER = 512

NOTICE = {
    "ko": "만 14세 미만 이용자에게는 법정대리인의 동의 없이 맞춤형 광고 등 행태정보를 이용하는 쿠키를 "
    "사용하지 않습니다.",
    "en": "Visitors under 14 get no advertising or other behavioural cookies without their legal "
    "representative's consent.",
}


class ChildHeaderError(ConsentGatewayError):
    """An ``X-Consent-Child`` value the gateway cannot read; the gateway treats the visitor as a child."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value[:64]
        super().__init__(
            f'X-Consent-Child {self.value!r}: {reason}. Send 1, 0, or 1; guardian="marketing" '
            "(see docs/cookies.md); the visitor is treated as under 14 with no guardian consent"
        )


@dataclass(frozen=True, slots=True)
class ChildMark:
    """What the app said of a visitor: under 14 or not, and the categories a guardian consented to."""

    child: bool
    guardian: frozenset[str] = frozenset()

    def allows(self, category: str, behavioural: Iterable[str]) -> bool:
        """Whether ``category`` may be granted at all for this visitor."""
        return not self.child or category not in set(behavioural) or category in self.guardian


ADULT = ChildMark(False)
CHILD = ChildMark(True)
"""Under 14 with no guardian consent: also what an unreadable header means (the protective reading)."""


def parse_header(value: str | bytes) -> ChildMark:
    """Read an ``X-Consent-Child`` value; raises ``ChildHeaderError`` for anything else."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if len(value) > MAX_HEADER:
        raise ChildHeaderError(value, f"longer than {MAX_HEADER} characters")
    flag, _, rest = value.partition(";")
    flag = flag.strip()
    if flag == "0" and not rest.strip():
        return ADULT
    if flag != "1":
        raise ChildHeaderError(value, "the first value must be 1 (under 14) or 0 (14 or older)")
    if not rest.strip():
        return CHILD
    match = _GUARDIAN.match(rest)
    if match is None:
        raise ChildHeaderError(value, 'the only parameter is guardian="category ..."')
    return ChildMark(True, _categories(value, match.group(1) if match.group(1) is not None else match.group(2)))


def _categories(value: str, text: str) -> frozenset[str]:
    names = [n for n in re.split(r"[\s,]+", text.strip().lower()) if n]
    for name in names:
        if not _CATEGORY.match(name):
            raise ChildHeaderError(value, f"{name[:32]!r} is not a category key")
    return frozenset(names)


def consume_child_header(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], ChildMark | None]:
    """The response headers without ``X-Consent-Child``, and the mark it gave (None without one).

    Several such headers: the most protective one wins (a child mark over an adult one, the
    smallest guardian consent). An unreadable one counts as ``CHILD``.
    """
    kept: list[tuple[bytes, bytes]] = []
    marks: list[ChildMark] = []
    for name, value in headers:
        if name.lower() != HEADER_BYTES:
            kept.append((name, value))
            continue
        try:
            marks.append(parse_header(value))
        except ChildHeaderError:
            marks.append(CHILD)
    if not marks:
        return headers, None
    return kept, _most_protective(marks)


def _most_protective(marks: list[ChildMark]) -> ChildMark:
    children = [m for m in marks if m.child]
    if not children:
        return ADULT
    guardian = frozenset.intersection(*(m.guardian for m in children))
    return ChildMark(True, guardian)


def restrict(
    granted: frozenset[str], mark: ChildMark | None, behavioural: Iterable[str] = DEFAULT_BEHAVIOURAL
) -> frozenset[str]:
    """``granted`` without the behavioural categories a child's guardian did not consent to."""
    if mark is None or not mark.child:
        return granted
    refused = set(behavioural) - mark.guardian
    return granted - refused if refused & granted else granted


def restrict_consent(
    consent: Consent, mark: ChildMark | None, behavioural: Iterable[str] = DEFAULT_BEHAVIOURAL
) -> Consent:
    """``consent`` as the gateway enforces it for a marked child (the same object when nothing changes)."""
    categories = restrict(consent.categories, mark, behavioural)
    return consent if categories == consent.categories else dataclasses.replace(consent, categories=categories)


def refused_for_child(mark: ChildMark | None, behavioural: Iterable[str] = DEFAULT_BEHAVIOURAL) -> frozenset[str]:
    """The categories the banner shows as unavailable for this visitor (and says why, ``NOTICE``)."""
    if mark is None or not mark.child:
        return frozenset()
    return frozenset(behavioural) - mark.guardian


def receipt_fields(mark: ChildMark | None) -> dict[str, Any]:
    """What a receipt records of the mark: ``child`` (0/1) and ``guardian_categories``."""
    if mark is None or not mark.child:
        return {"child": 0, "guardian_categories": []}
    return {"child": 1, "guardian_categories": sorted(mark.guardian)}


# -- the Python call -------------------------------------------------------------------------------


@dataclass(slots=True)
class ChildSlot:
    """The place in an ASGI scope where ``mark_child`` leaves its mark for the gateway to read."""

    mark: ChildMark | None = field(default=None)
    previous: ChildMark | None = field(default=None)  # what the request's cookie said
    unrestricted: Consent | None = field(default=None)  # the visitor's own choice, before the mark


def open_slot(scope: MutableMapping[str, Any]) -> ChildSlot:
    """Put an empty slot into ``scope`` before the app is called (the gateway does this)."""
    slot = ChildSlot()
    scope[SCOPE_KEY] = slot
    return slot


def mark_child(scope: MutableMapping[str, Any], *, child: bool = True, guardian: Iterable[str] = ()) -> None:
    """Mark the visitor of this request as under 14 (``child=False``: as verified 14 or older).

    ``guardian``: the categories the legal representative consented to, after the app obtained and
    recorded that consent. Call it before the response starts; raises when the app is not behind the
    gateway, so a missing mark is never silent.
    """
    slot = scope.get(SCOPE_KEY)
    if not isinstance(slot, ChildSlot):
        raise RuntimeError(
            "mark_child() found no consent gateway in this request's scope; wrap the app in ConsentGateway, "
            "or send the X-Consent-Child response header instead"
        )
    names = frozenset(guardian)
    for name in names:
        if not _CATEGORY.match(name):
            raise ValueError(f"guardian category {name[:32]!r} is not a category key; use e.g. 'marketing'")
    slot.mark = ChildMark(True, names) if child else ADULT


# -- the cookie ------------------------------------------------------------------------------------


class ChildCookieCodec:
    """Signs and reads the child mark's own cookie (``cg_child``), with the gateway's secret keys.

    A cookie of its own rather than a field of the consent cookie: the mark comes from the app, not
    from the visitor's choice, and must survive "reject all", a withdrawal and a new policy version.
    """

    def __init__(self, secret_keys: tuple[str, ...] | list[str], *, max_age: int) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self.max_age = max_age
        self._newest = URLSafeTimedSerializer(secret_keys[-1], salt=COOKIE_SALT)
        self._all = URLSafeTimedSerializer(list(secret_keys), salt=COOKIE_SALT)

    def __repr__(self) -> str:
        return f"ChildCookieCodec(max_age={self.max_age})"

    def encode(self, mark: ChildMark) -> str:
        return str(self._newest.dumps([1 if mark.child else 0, sorted(mark.guardian), int(time.time())]))

    def decode(self, value: str) -> ChildMark | None:
        """The mark, or None for a missing, tampered, expired or malformed cookie."""
        if not value or len(value) > 1024:
            return None
        try:
            payload = self._all.loads(value, max_age=self.max_age)
        except BadData:
            return None
        if not (isinstance(payload, list) and len(payload) == 3 and payload[0] in (0, 1)):
            return None
        guardian = payload[1]
        if not isinstance(guardian, list) or not all(isinstance(g, str) and _CATEGORY.match(g) for g in guardian):
            return None
        return ChildMark(bool(payload[0]), frozenset(guardian))


# -- what the gateway calls ------------------------------------------------------------------------

CHILD_COOKIE = "cg_child"


class ChildGuard:
    """The gateway's side of the children's rule, in two calls around the app.

    ``on_request(scope, consent)`` reads the mark from the ``cg_child`` cookie, opens the slot that
    ``mark_child`` fills, and returns the consent to enforce. ``on_response(scope, headers, consent)``
    takes ``X-Consent-Child`` out of the app's response headers, applies a new mark (header or call)
    to this very response, and adds the ``cg_child`` cookie that keeps it.
    """

    def __init__(self, settings: Settings) -> None:
        self._codec = ChildCookieCodec(settings.secret_keys, max_age=settings.cookie.max_age_days * 86400)
        self.behavioural = tuple(settings.consent.behavioural)
        self._max_age = settings.cookie.max_age_days * 86400
        attributes = ["Path=/", "HttpOnly", "SameSite=Lax"]
        if settings.cookie.domain:
            attributes.append(f"Domain={settings.cookie.domain}")
        if settings.cookie.secure:
            attributes.append("Secure")
        self._attributes = "; ".join(attributes)
        self._needle = CHILD_COOKIE.encode("latin-1") + b"="

    def __repr__(self) -> str:
        return f"ChildGuard(behavioural={self.behavioural!r})"

    def mark_of_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> ChildMark | None:
        """The mark the request's ``cg_child`` cookie carries (None without a valid one)."""
        return self.mark_of_cookies(value for key, value in headers if key == b"cookie")

    def mark_of_cookies(self, cookie_headers: Iterable[bytes]) -> ChildMark | None:
        """The mark the ``cg_child`` cookie in these Cookie header values carries (None without a valid one)."""
        for value in cookie_headers:
            if self._needle in value:
                for part in value.decode("latin-1").split(";"):
                    name, _, text = part.strip(" \t").partition("=")
                    if name == CHILD_COOKIE:
                        mark = self._codec.decode(text)
                        if mark is not None:
                            return mark
        return None

    def restrict_request(self, headers: Iterable[tuple[bytes, bytes]], consent: Consent) -> Consent:
        """The consent to enforce for a request by its cookie alone (``/collect``, the settings page)."""
        return restrict_consent(consent, self.mark_of_headers(headers), self.behavioural)

    def on_request(
        self, scope: MutableMapping[str, Any], consent: Consent, cookie_headers: Iterable[bytes] | None = None
    ) -> Consent:
        """Before the app: the consent to enforce and to put in ``scope["consent"]``.

        ``cookie_headers``: the request's Cookie header values, when the caller has them at hand
        (else they are read from the scope)."""
        if cookie_headers is None:
            mark = self.mark_of_headers(scope.get("headers", ()))
        else:
            mark = self.mark_of_cookies(cookie_headers)
        scope[SCOPE_KEY] = ChildSlot(None, mark, consent)
        return consent if mark is None else restrict_consent(consent, mark, self.behavioural)

    @staticmethod
    def marked_by_call(scope: Mapping[str, Any]) -> bool:
        """Whether the app called ``mark_child`` during this request."""
        slot = scope.get(SCOPE_KEY)
        return isinstance(slot, ChildSlot) and slot.mark is not None

    def on_response(
        self, scope: MutableMapping[str, Any], headers: list[tuple[bytes, bytes]], consent: Consent
    ) -> tuple[list[tuple[bytes, bytes]], Consent]:
        """At ``http.response.start``: the headers without ``X-Consent-Child`` (plus ``cg_child`` when
        the mark changed) and the consent to filter this response's cookies with."""
        headers, from_header = consume_child_header(headers)
        slot = scope.get(SCOPE_KEY)
        from_call = slot.mark if isinstance(slot, ChildSlot) else None
        marks = [m for m in (from_header, from_call) if m is not None]
        if not marks:
            return headers, consent
        mark = _most_protective(marks)
        previous = slot.previous if isinstance(slot, ChildSlot) else None
        if isinstance(slot, ChildSlot):
            slot.mark = mark
        if mark != previous:
            headers = [*headers, (b"set-cookie", self.cookie_header(mark))]
        # A new mark replaces the cookie's: an adult mark gives back what the visitor chose.
        chosen = slot.unrestricted if isinstance(slot, ChildSlot) and slot.unrestricted is not None else consent
        return headers, restrict_consent(chosen, mark, self.behavioural)

    def cookie_header(self, mark: ChildMark) -> bytes:
        """The Set-Cookie that keeps ``mark`` (an adult mark deletes the cookie)."""
        if not mark.child:
            return f"{CHILD_COOKIE}=; Max-Age=0; {self._attributes}".encode("latin-1")
        return f"{CHILD_COOKIE}={self._codec.encode(mark)}; Max-Age={self._max_age}; {self._attributes}".encode(
            "latin-1"
        )

    @staticmethod
    def mark_of(scope: Mapping[str, Any]) -> ChildMark | None:
        """The mark in force for this request (for receipts and the banner's notice)."""
        slot = scope.get(SCOPE_KEY)
        if not isinstance(slot, ChildSlot):
            return None
        return slot.mark if slot.mark is not None else slot.previous
