"""EST paths and labels (RFC 7030 §3.2.2, checklist E7)."""

from __future__ import annotations

import pytest

from estkit.protocol import (
    CRL_PATH,
    MAX_LABEL_LENGTH,
    OPERATIONS,
    WELL_KNOWN_EST,
    PathError,
    build_path,
    parse_path,
    validate_label,
)


def test_constants() -> None:
    assert WELL_KNOWN_EST == "/.well-known/est"
    assert CRL_PATH == "/crl"
    assert set(OPERATIONS) == {
        "cacerts",
        "simpleenroll",
        "simplereenroll",
        "csrattrs",
        "serverkeygen",
        "fullcmc",
    }


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("label", [None, "nmos", "a.b_c~d-e", "x" * MAX_LABEL_LENGTH])
def test_build_parse_round_trip(operation: str, label: str | None) -> None:
    path = build_path(operation, label)
    assert path.startswith(WELL_KNOWN_EST + "/")
    assert path.endswith("/" + operation)
    assert parse_path(path) == (label, operation)


def test_parse_ignores_query_and_fragment() -> None:
    assert parse_path("/.well-known/est/cacerts?x=1") == (None, "cacerts")
    assert parse_path("/.well-known/est/lab/csrattrs#frag") == ("lab", "csrattrs")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/cacerts", "is not under /.well-known/est/"),
        ("/.well-known/est", "is not under"),
        ("/.well-known/est/", "unknown EST operation ''"),
        ("/.well-known/est/enroll", "unknown EST operation 'enroll'"),
        ("/.well-known/est/CACERTS", "unknown EST operation"),
        ("/.well-known/est/a/b/cacerts", "too many segments"),
        ("/.well-known/est/cacerts/", "label 'cacerts' is an EST operation name"),
        ("/.well-known/est//cacerts", "non-empty path segment"),
        ("/.well-known/est/../cacerts", "invalid label '..'"),
        ("/.well-known/est/a%2Fb/cacerts", "invalid label 'a%2Fb'"),
        ("/.well-known/est/simpleenroll/cacerts", "is an EST operation name"),
    ],
)
def test_parse_path_errors(path: str, fragment: str) -> None:
    with pytest.raises(PathError) as info:
        parse_path(path)
    assert fragment in str(info.value)


def test_parse_path_requires_text() -> None:
    with pytest.raises(PathError, match="must be text"):
        parse_path(b"/.well-known/est/cacerts")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("", "non-empty"),
        ("x" * (MAX_LABEL_LENGTH + 1), f"at most {MAX_LABEL_LENGTH}"),
        ("a/b", "invalid label"),
        ("a b", "invalid label"),
        (".", "invalid label"),
        ("é", "invalid label"),
        ("cacerts", "is an EST operation name"),
    ],
)
def test_validate_label_errors(label: str, fragment: str) -> None:
    with pytest.raises(PathError) as info:
        validate_label(label)
    assert fragment in str(info.value)


def test_build_path_rejects_bad_operation_and_label() -> None:
    with pytest.raises(PathError, match="unknown EST operation 'enrol'"):
        build_path("enrol")
    with pytest.raises(PathError, match="invalid label"):
        build_path("cacerts", "bad label")
