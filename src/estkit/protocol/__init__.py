"""estkit.protocol: the EST wire format (RFC 7030, RFC 8951) as pure functions, no I/O.

Why one flat namespace: the client, server, NMOS node and conformance suite all speak the same
wire format, so they import it from one place (``from estkit.protocol import decode_body``) and
can never drift apart. Nothing here opens a socket or a file; see docs/internal-api.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from .certs import FINGERPRINT_PREFIX as FINGERPRINT_PREFIX
    from .certs import certificates_to_pem as certificates_to_pem
    from .certs import colon_hex as colon_hex
    from .certs import common_name as common_name
    from .certs import dns_names as dns_names
    from .certs import fingerprint_matches as fingerprint_matches
    from .certs import format_fingerprint as format_fingerprint
    from .certs import is_ca_certificate as is_ca_certificate
    from .certs import is_hostname as is_hostname
    from .certs import is_self_signed as is_self_signed
    from .certs import is_signed_by as is_signed_by
    from .certs import issuer_public_key as issuer_public_key
    from .certs import key_identifier as key_identifier
    from .certs import key_usage as key_usage
    from .certs import load_pem_certificates as load_pem_certificates
    from .certs import order_certificates as order_certificates
    from .certs import parse_fingerprint as parse_fingerprint
    from .certs import sha256_fingerprint as sha256_fingerprint
    from .certs import signed_with_key as signed_with_key
    from .csr import FORBIDDEN_BUILD_HASHES as FORBIDDEN_BUILD_HASHES
    from .csr import MAX_COMMON_NAME_LENGTH as MAX_COMMON_NAME_LENGTH
    from .csr import CsrInfo as CsrInfo
    from .csr import CsrPolicy as CsrPolicy
    from .csr import build_csr as build_csr
    from .csr import check_csr_policy as check_csr_policy
    from .csr import csr_attribute_values as csr_attribute_values
    from .csr import decode_csr_body as decode_csr_body
    from .csr import describe_csr as describe_csr
    from .csr import encode_csr_body as encode_csr_body
    from .csr import name_problem as name_problem
    from .csr import parse_csr as parse_csr
    from .csr import shown_name as shown_name
    from .csrattrs import CHALLENGE_PASSWORD_OID as CHALLENGE_PASSWORD_OID
    from .csrattrs import CURVE_NAMES as CURVE_NAMES
    from .csrattrs import EC_PUBLIC_KEY_OID as EC_PUBLIC_KEY_OID
    from .csrattrs import EXTENSION_REQUEST_OID as EXTENSION_REQUEST_OID
    from .csrattrs import HASH_OIDS as HASH_OIDS
    from .csrattrs import RSA_ENCRYPTION_OID as RSA_ENCRYPTION_OID
    from .csrattrs import TLS_EXPORTER_POP_OID as TLS_EXPORTER_POP_OID
    from .csrattrs import CsrAttribute as CsrAttribute
    from .csrattrs import CsrAttrs as CsrAttrs
    from .csrattrs import decode_csrattrs as decode_csrattrs
    from .csrattrs import encode_csrattrs as encode_csrattrs
    from .csrattrs import extension_templates as extension_templates
    from .csrattrs import oid_name as oid_name
    from .encoding import BASE64_LINE_LENGTH as BASE64_LINE_LENGTH
    from .encoding import BodyForm as BodyForm
    from .encoding import decode_base64_body as decode_base64_body
    from .encoding import decode_body as decode_body
    from .encoding import decode_pem_block_content as decode_pem_block_content
    from .encoding import der_length as der_length
    from .encoding import encode_base64_body as encode_base64_body
    from .encoding import iter_pem_blocks as iter_pem_blocks
    from .errors import CsrAttrsError as CsrAttrsError
    from .errors import CsrError as CsrError
    from .errors import CsrPolicyError as CsrPolicyError
    from .errors import EncodingError as EncodingError
    from .errors import EstProtocolError as EstProtocolError
    from .errors import MediaTypeError as MediaTypeError
    from .errors import MultipartError as MultipartError
    from .errors import PathError as PathError
    from .errors import Pkcs7Error as Pkcs7Error
    from .keys import KEY_TYPES as KEY_TYPES
    from .keys import KeyInfo as KeyInfo
    from .keys import PrivateKey as PrivateKey
    from .keys import PublicKey as PublicKey
    from .keys import SignatureHash as SignatureHash
    from .keys import describe_public_key as describe_public_key
    from .keys import generate_private_key as generate_private_key
    from .keys import key_matches_certificate as key_matches_certificate
    from .keys import key_type_for_curve as key_type_for_curve
    from .keys import load_private_key as load_private_key
    from .keys import private_key_to_der as private_key_to_der
    from .keys import private_key_to_pem as private_key_to_pem
    from .keys import public_keys_equal as public_keys_equal
    from .keys import signature_hash_for as signature_hash_for
    from .keys import supported_private_key as supported_private_key
    from .keys import supported_public_key as supported_public_key
    from .limits import ALLOWED_CURVES as ALLOWED_CURVES
    from .limits import ALLOWED_SIGNATURE_HASHES as ALLOWED_SIGNATURE_HASHES
    from .limits import DEFAULT_MAX_ATTEMPTS as DEFAULT_MAX_ATTEMPTS
    from .limits import DEFAULT_RETRY_AFTER_SECONDS as DEFAULT_RETRY_AFTER_SECONDS
    from .limits import MAX_BOUNDARY_LENGTH as MAX_BOUNDARY_LENGTH
    from .limits import MAX_CERTS_IN_PKCS7 as MAX_CERTS_IN_PKCS7
    from .limits import MAX_CSRATTRS_ITEMS as MAX_CSRATTRS_ITEMS
    from .limits import MAX_LABEL_LENGTH as MAX_LABEL_LENGTH
    from .limits import MAX_MEDIA_TYPE_LENGTH as MAX_MEDIA_TYPE_LENGTH
    from .limits import MAX_REQUEST_BODY_BYTES as MAX_REQUEST_BODY_BYTES
    from .limits import MAX_RESPONSE_BODY_BYTES as MAX_RESPONSE_BODY_BYTES
    from .limits import MAX_RETRY_AFTER_SECONDS as MAX_RETRY_AFTER_SECONDS
    from .limits import MIN_RSA_BITS as MIN_RSA_BITS
    from .media import CSRATTRS as CSRATTRS
    from .media import MULTIPART_MIXED as MULTIPART_MIXED
    from .media import PKCS7_CERTS_ONLY as PKCS7_CERTS_ONLY
    from .media import PKCS7_MIME as PKCS7_MIME
    from .media import PKCS8 as PKCS8
    from .media import PKCS10 as PKCS10
    from .media import SERVER_GENERATED_KEY as SERVER_GENERATED_KEY
    from .media import TEXT_PLAIN as TEXT_PLAIN
    from .media import MediaType as MediaType
    from .media import parse_media_type as parse_media_type
    from .paths import CRL_PATH as CRL_PATH
    from .paths import OPERATIONS as OPERATIONS
    from .paths import WELL_KNOWN_EST as WELL_KNOWN_EST
    from .paths import build_path as build_path
    from .paths import parse_path as parse_path
    from .paths import split_host_port as split_host_port
    from .paths import validate_label as validate_label
    from .pkcs7 import build_certs_only as build_certs_only
    from .pkcs7 import decode_certs_only_body as decode_certs_only_body
    from .pkcs7 import encode_certs_only_body as encode_certs_only_body
    from .pkcs7 import parse_certs_only as parse_certs_only
    from .pop import TLS_EXPORTER as TLS_EXPORTER
    from .pop import TLS_EXPORTER_LENGTH as TLS_EXPORTER_LENGTH
    from .pop import TLS_EXPORTER_PREFIX as TLS_EXPORTER_PREFIX
    from .pop import TLS_UNIQUE as TLS_UNIQUE
    from .pop import PopResult as PopResult
    from .pop import binding_type_of as binding_type_of
    from .pop import challenge_password_for as challenge_password_for
    from .pop import check_pop as check_pop
    from .pop import exporter_challenge_password_for as exporter_challenge_password_for
    from .pop import tls_unique_for as tls_unique_for
    from .retry import format_retry_after as format_retry_after
    from .retry import parse_retry_after as parse_retry_after
    from .rollover import CaCertificateSet as CaCertificateSet
    from .rollover import classify_ca_certificates as classify_ca_certificates
    from .serverkeygen import ASYMMETRIC_DECRYPT_KEY_IDENTIFIER as ASYMMETRIC_DECRYPT_KEY_IDENTIFIER
    from .serverkeygen import DECRYPT_KEY_IDENTIFIER as DECRYPT_KEY_IDENTIFIER
    from .serverkeygen import KeyEncryptionRequest as KeyEncryptionRequest
    from .serverkeygen import ServerKeygenResult as ServerKeygenResult
    from .serverkeygen import build_serverkeygen_response as build_serverkeygen_response
    from .serverkeygen import can_encrypt_to as can_encrypt_to
    from .serverkeygen import decrypt_private_key as decrypt_private_key
    from .serverkeygen import encrypt_private_key_for as encrypt_private_key_for
    from .serverkeygen import key_encryption_attribute as key_encryption_attribute
    from .serverkeygen import key_encryption_request as key_encryption_request
    from .serverkeygen import parse_serverkeygen_response as parse_serverkeygen_response
    from .tlsprofile import BCP_003_01_TLS12_CIPHERS as BCP_003_01_TLS12_CIPHERS
    from .tlsprofile import BCP_003_01_TLS13_SUITES as BCP_003_01_TLS13_SUITES

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__, search=True)
