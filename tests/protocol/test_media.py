"""Media type parsing and matching (checklist E16)."""

from __future__ import annotations

import pytest

from estkit.protocol import (
    CSRATTRS,
    MULTIPART_MIXED,
    PKCS7_CERTS_ONLY,
    PKCS7_MIME,
    PKCS8,
    PKCS10,
    SERVER_GENERATED_KEY,
    TEXT_PLAIN,
    MediaType,
    MediaTypeError,
    parse_media_type,
)
from estkit.protocol.limits import MAX_MEDIA_TYPE_LENGTH


def test_parse_lowercases_type_and_param_names() -> None:
    media = parse_media_type("Application/PKCS7-MIME; SMIME-Type=certs-only")
    assert media.type == "application"
    assert media.subtype == "pkcs7-mime"
    assert media.essence == "application/pkcs7-mime"
    assert media.params == (("smime-type", "certs-only"),)
    assert media.param("Smime-Type") == "certs-only"
    assert media.param("charset") is None


@pytest.mark.parametrize(
    "value",
    [
        "application/pkcs7-mime; smime-type=certs-only",
        "application/pkcs7-mime;smime-type=certs-only",
        'application/pkcs7-mime; smime-type="certs-only"',
        "application/pkcs7-mime ; smime-type = CERTS-ONLY ",
        "APPLICATION/PKCS7-MIME; charset=binary; smime-type=certs-only;",
    ],
)
def test_certs_only_variants_all_match(value: str) -> None:
    media = parse_media_type(value)
    assert media.matches(PKCS7_CERTS_ONLY)
    assert media.matches(PKCS7_MIME)
    assert media.matches(parse_media_type(PKCS7_MIME))


def test_matches_requires_expected_parameters() -> None:
    plain = parse_media_type("application/pkcs7-mime")
    assert plain.matches(PKCS7_MIME)
    assert not plain.matches(PKCS7_CERTS_ONLY)
    assert not parse_media_type(SERVER_GENERATED_KEY).matches(PKCS7_CERTS_ONLY)
    assert not parse_media_type(PKCS10).matches(PKCS8)


def test_quoted_string_with_escapes_and_round_trip() -> None:
    media = parse_media_type(r'multipart/mixed; boundary="a b\"c"')
    assert media.param("boundary") == 'a b"c'
    again = parse_media_type(str(media))
    assert again == media
    assert str(parse_media_type(PKCS7_CERTS_ONLY)) == PKCS7_CERTS_ONLY


def test_constants_parse() -> None:
    for value in (
        PKCS10,
        PKCS7_MIME,
        PKCS7_CERTS_ONLY,
        CSRATTRS,
        PKCS8,
        SERVER_GENERATED_KEY,
        MULTIPART_MIXED,
        TEXT_PLAIN,
    ):
        assert str(parse_media_type(value)) == value
    assert parse_media_type(TEXT_PLAIN).param("charset") == "utf-8"


def test_media_type_object_constructed_directly() -> None:
    media = MediaType("text", "plain", (("charset", "utf-8"),))
    assert media.matches("TEXT/plain; CHARSET=UTF-8")
    assert not media.matches("text/html")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "not a media type"),
        ("application", "not a media type"),
        ("/pkcs10", "not a media type"),
        ("application/pkcs10 x", "unexpected 'x'"),
        ("application/pkcs10; =x", "malformed parameter"),
        ("application/pkcs10; a", "malformed parameter"),
        ("application/pkcs10; a=", "has no valid value"),
        ('application/pkcs10; a="unterminated', "has no valid value"),
        ("application/pkcs10; a=b c", "unexpected 'c'"),
    ],
)
def test_invalid_media_types_raise_with_reason(value: str, fragment: str) -> None:
    with pytest.raises(MediaTypeError, match=fragment):
        parse_media_type(value)


def test_overlong_media_type_is_refused() -> None:
    with pytest.raises(MediaTypeError, match="over the limit"):
        parse_media_type("a/b; x=" + "y" * MAX_MEDIA_TYPE_LENGTH)


def test_non_string_is_refused() -> None:
    with pytest.raises(MediaTypeError, match="must be text"):
        parse_media_type(b"application/pkcs10")  # type: ignore[arg-type]
