"""A few DER helpers on top of asn1crypto, for structures ``cryptography`` does not expose.

Why: a CSR's attribute values and CsrAttrs values (RFC 8951 §4) can be *any* ASN.1 element,
including context-tagged ones that asn1crypto's typed classes refuse to build (``Any`` re-parses
its value with the universal tag map). We therefore walk the TLV structure with asn1crypto's
public low-level ``parser`` (no hand-written length decoding) and keep each value as its exact
DER bytes, decoding only the universal types we interpret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from asn1crypto import core, parser
from cryptography import x509

# asn1crypto reports malformed input with several exception types; parsers that must only raise
# our own errors catch exactly these and convert them.
ASN1_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    LookupError,
    OverflowError,
    AttributeError,
    RecursionError,
)

_Loaded = TypeVar("_Loaded")


def read_x509(
    loader: Callable[[bytes], _Loaded],
    data: bytes,
    error: Callable[[str], Exception],
    what: str,
    hint: str = "",
) -> _Loaded:
    """``loader(data)`` (one of cryptography's ``x509.load_*``); when ``data`` cannot be read,
    ``error`` with the message ``what (reason)hint``. cryptography raises ``ValueError`` for
    malformed input and ``InvalidVersion``, which is not a ValueError, for a version field other
    than the ones it knows (found by fuzz/fuzz_protocol.py,
    fuzz/regressions/parse_csr-invalid-version.bin)."""
    try:
        return loader(bytes(data))
    except (ValueError, x509.InvalidVersion) as exc:
        raise error(f"{what} ({exc}){hint}") from None


CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2
METHOD_CONSTRUCTED = 1
TAG_OID = 6
TAG_SEQUENCE = 16
TAG_SET = 17


class Element:
    """One parsed TLV: class, constructed flag, tag number, contents and the full encoding."""

    __slots__ = ("class_", "constructed", "contents", "der", "tag")

    def __init__(self, der: bytes) -> None:
        class_, method, tag, header, contents, trailer = parser.parse(der, strict=True)
        self.class_: int = class_
        self.constructed: bool = method == METHOD_CONSTRUCTED
        self.tag: int = tag
        self.contents: bytes = contents
        self.der: bytes = header + contents + trailer

    def is_universal(self, tag: int) -> bool:
        return self.class_ == CLASS_UNIVERSAL and self.tag == tag

    def children(self) -> list[Element]:
        """The elements inside a constructed element, in order."""
        if not self.constructed:
            raise ValueError(f"expected a constructed element, found primitive tag {self.tag}")
        return split_elements(self.contents)


def split_elements(data: bytes) -> list[Element]:
    """Split concatenated DER elements (the contents of a SEQUENCE or SET)."""
    elements: list[Element] = []
    rest = data
    while rest:
        length = parser.peek(rest)
        if length <= 0 or length > len(rest):
            raise ValueError("an element's length runs past the end of its container")
        elements.append(Element(rest[:length]))
        rest = rest[length:]
    return elements


def parse_attribute(element: Element) -> tuple[str, list[bytes]]:
    """``Attribute ::= SEQUENCE { type OID, values SET OF ANY }`` → (dotted OID, [DER values])."""
    if not (element.is_universal(TAG_SEQUENCE) and element.constructed):
        raise ValueError(f"an Attribute must be a SEQUENCE, found tag {element.tag}")
    parts = element.children()
    if len(parts) != 2 or not parts[0].is_universal(TAG_OID):
        raise ValueError("an Attribute must hold exactly an OID and a SET of values")
    if not (parts[1].is_universal(TAG_SET) and parts[1].constructed):
        raise ValueError("an Attribute's values must be a SET")
    dotted = core.ObjectIdentifier.load(parts[0].der, strict=True).dotted
    return dotted, [value.der for value in parts[1].children()]


def csr_attributes(tbs_der: bytes) -> list[tuple[str, list[bytes]]]:
    """``(dotted OID, [DER value, ...])`` for every attribute of a CertificationRequestInfo.

    RFC 2986 §4.1: SEQUENCE { version, subject, subjectPKInfo, attributes [0] IMPLICIT SET }.
    """
    parts = Element(tbs_der).children()
    result: list[tuple[str, list[bytes]]] = []
    for part in parts[3:]:
        if part.class_ == CLASS_CONTEXT and part.tag == 0 and part.constructed:
            result.extend(parse_attribute(child) for child in part.children())
    return result


def encode_attribute(dotted: str, values: list[bytes]) -> core.Asn1Value:
    """An Attribute whose values are the given DER elements, sorted as DER SET OF requires."""
    items = []
    for value in sorted(values):
        element = Element(value)
        if element.der != value:
            raise ValueError("a value is not exactly one DER element")
        method = METHOD_CONSTRUCTED if element.constructed else 0
        items.append(
            core.Asn1Value(
                class_=element.class_, tag=element.tag, method=method, contents=element.contents
            )
        )
    return _Attribute({"type": dotted, "values": items})


class _AnySet(core.SetOf):  # type: ignore[misc]  # asn1crypto is untyped: base is Any
    _child_spec = core.Asn1Value


class _Attribute(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped: base is Any
    _fields = [("type", core.ObjectIdentifier), ("values", _AnySet)]  # noqa: RUF012


def decode_string_value(der: bytes) -> str | None:
    """The text of a DER string value (UTF8String, PrintableString, ...), else None."""
    value = core.load(der, strict=True)
    if isinstance(value, core.AbstractString):
        return str(value.native)
    if isinstance(value, core.OctetString):
        return bytes(value.native).decode("utf-8", "replace")
    return None


def decode_octet_string(der: bytes) -> bytes | None:
    """The contents of a DER OCTET STRING value, else None."""
    element = Element(der)
    if element.is_universal(4) and not element.constructed:
        return element.contents
    return None


def decode_oid(der: bytes) -> str | None:
    """The dotted form of a DER OBJECT IDENTIFIER value, else None."""
    element = Element(der)
    if element.is_universal(TAG_OID) and not element.constructed:
        return str(core.ObjectIdentifier.load(der, strict=True).dotted)
    return None


def decode_integer(der: bytes) -> int | None:
    """A DER INTEGER value, else None."""
    element = Element(der)
    if element.is_universal(2) and not element.constructed:
        return int(core.Integer.load(der, strict=True).native)
    return None


def primitive_header(der: bytes) -> tuple[int, bytes] | None:
    """``(universal tag number, contents)`` for a DER primitive universal value, else None."""
    element = Element(der)
    if element.class_ != CLASS_UNIVERSAL or element.constructed or element.der != der:
        return None
    return element.tag, element.contents
