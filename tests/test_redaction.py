"""Finding 8 of the audit: what refusing visitors leave behind is redacted (phones in stored text,
secret-looking path segments, free-text props on pseudonymised rows)."""

from __future__ import annotations

import pytest

from consent_gateway.pseudonymize import REDACTED, declared_props, redact_path, redact_text, split_query


@pytest.mark.parametrize(
    "term",
    ["010-1234-5678", "01012345678", "+82 10-1234-5678", "+82 10 1234 5678", "+14155552671", "(02) 123-4567 8"],
)
def test_phone_numbers_in_utm_values_are_redacted(term: str) -> None:
    assert split_query(f"utm_term={term.replace('+', '%2B')}&utm_source=news").utm == (
        "news",
        "",
        "",
        REDACTED,
        "",
    )


@pytest.mark.parametrize("term", ["summer sale 2024", "size 10", "iphone 15 pro", "2024-12-04"])
def test_ordinary_utm_values_with_digits_are_kept(term: str) -> None:
    assert split_query(f"utm_term={term}").utm[3] == term


def test_redact_text_replaces_phones_and_emails_inside_free_text() -> None:
    text = "call 010-9876-5432 or mail bob.kim@example.co.kr about order 2024"
    assert redact_text(text) == f"call {REDACTED} or mail {REDACTED} about order 2024"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/reset/PWRESETTOKEN9f8e7d", f"/reset/{REDACTED}"),
        ("/invite/550e8400-e29b-41d4-a716-446655440000/accept", f"/invite/{REDACTED}/accept"),
        ("/invite/550e8400e29b41d4a716446655440000", f"/invite/{REDACTED}"),
        ("/account/1234567890123", f"/account/{REDACTED}"),
        ("/verify/dGhpcyBpcyBhIHRva2VuMTIz", f"/verify/{REDACTED}"),
        ("/call/010-1234-5678", f"/call/{REDACTED}"),
    ],
)
def test_secret_looking_path_segments_get_the_placeholder(path: str, expected: str) -> None:
    assert redact_path(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/", "/blog/2024/12/04/iphone-15-pro-review", "/p/how-to-install-python-3-12", "/product/12345", "/원생/관리"],
)
def test_ordinary_paths_are_kept(path: str) -> None:
    assert redact_path(path) == path


def test_props_are_limited_to_the_keys_declared_for_the_event() -> None:
    declared = {"signup": frozenset({"plan"}), "*": frozenset({"step"})}
    signup = declared_props({"plan": "pro", "name": "Bob Kim", "phone": "010"}, "signup", declared)
    assert signup.props == {"plan": "pro"} and signup.dropped == 2
    other = declared_props({"step": 2, "name": "Bob Kim"}, "checkout", declared)
    assert other.props == {"step": 2} and other.dropped == 1
    assert declared_props({"name": "Bob"}, "x", {"signup": frozenset()}).props == {}
    # No declaration at all: nothing filtered (the setting is optional).
    assert declared_props({"name": "Bob"}, "x", None).props == {"name": "Bob"}
