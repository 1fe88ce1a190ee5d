"""STUN binding requests and responses (RFC 5389), without sockets: what a NAT maps a UDP
socket to, as a STUN server sees it.

Only what a client of the Binding method needs: the 20-byte request, and the response's
XOR-MAPPED-ADDRESS (§15.2), or MAPPED-ADDRESS (§15.1) from servers that predate it. Every
datagram that is not a well-formed answer to our transaction raises `StunError`, and
nothing else: answers arrive on ports anyone can send to.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
import zlib

from sip2rtmp.netaddr import Address

__all__ = [
    "STUN_PORT",
    "StunError",
    "binding_request",
    "is_stun",
    "new_transaction_id",
    "parse_binding_response",
]

STUN_PORT = 3478
"""The default port for STUN over UDP (RFC 5389 §18.4)."""

MAGIC_COOKIE = 0x2112A442
"""RFC 5389 §6: tells a STUN message from RFC 3489's, and keys the XOR of §15.2."""
HEADER_SIZE = 20
TRANSACTION_ID_SIZE = 12

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

MAPPED_ADDRESS = 0x0001
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
FINGERPRINT = 0x8028
_FINGERPRINT_XOR = 0x5354554E  # §15.5: "STUN"

_UNDERSTOOD = frozenset(
    {
        MAPPED_ADDRESS,
        0x0002,  # RESPONSE-ADDRESS  }
        0x0003,  # CHANGE-REQUEST    }
        0x0004,  # SOURCE-ADDRESS    }  RFC 3489's, which its servers still send (§18.2)
        0x0005,  # CHANGED-ADDRESS   }
        0x0006,  # USERNAME
        0x0007,  # PASSWORD          }
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        0x000A,  # UNKNOWN-ATTRIBUTES
        0x000B,  # REFLECTED-FROM    (RFC 3489)
        0x0014,  # REALM
        0x0015,  # NONCE
        XOR_MAPPED_ADDRESS,
    }
)
"""Comprehension-required attributes (types below 0x8000) a response may carry and that
need no action from us; any other makes the response unusable (§7.3.4)."""

_FAMILIES = {0x01: 4, 0x02: 16}
"""Address family to address length (§15.1)."""
_MAX_REASON = 128  # characters of a reason phrase (§15.6)


class StunError(Exception):
    """No usable answer: the message says what was wrong, in one line."""


def new_transaction_id() -> bytes:
    """96 random bits (§6): an off-path sender cannot guess which answer we wait for."""
    return secrets.token_bytes(TRANSACTION_ID_SIZE)


def binding_request(transaction_id: bytes) -> bytes:
    """A Binding request with no attributes (§7.1): nothing to authenticate, nothing to leak."""
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise ValueError(f"a transaction id is {TRANSACTION_ID_SIZE} bytes")
    return struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + transaction_id


def is_stun(data: bytes) -> bool:
    """A STUN message by its first byte (0 to 3, RFC 7983 §7) and magic cookie (§6), so
    RTP, RTCP, DTLS and STUN can share one port."""
    return (
        len(data) >= HEADER_SIZE
        and data[0] <= 3
        and int.from_bytes(data[4:8], "big") == MAGIC_COOKIE
    )


def parse_binding_response(data: bytes, transaction_id: bytes) -> Address:
    """The mapped address in the answer to `transaction_id`; an error response raises
    `StunError` with its code and reason (§7.3.4)."""
    if not is_stun(data):
        raise StunError("not a STUN message (RFC 5389 §6 header and magic cookie)")
    message_type, length = struct.unpack_from("!HH", data)
    if length != len(data) - HEADER_SIZE:
        raise StunError(f"STUN length {length} does not match the {len(data)}-byte datagram")
    if length % 4:
        raise StunError(f"STUN length {length} is not a multiple of 4 (RFC 5389 §6)")
    if data[8:HEADER_SIZE] != transaction_id:
        raise StunError("STUN answer to another transaction")
    if message_type not in (BINDING_SUCCESS, BINDING_ERROR):
        raise StunError(f"STUN message type {message_type:#06x} is not a Binding response")
    attributes = _attributes(data)
    if message_type == BINDING_ERROR:
        value = attributes.get(ERROR_CODE)
        raise StunError(_error(value) if value is not None else "STUN error without ERROR-CODE")
    unknown = sorted(kind for kind in attributes if kind < 0x8000 and kind not in _UNDERSTOOD)
    if unknown:
        names = ", ".join(f"{kind:#06x}" for kind in unknown)
        raise StunError(f"STUN response with unknown required attributes {names}")
    xor_mapped = attributes.get(XOR_MAPPED_ADDRESS)
    if xor_mapped is not None:
        return _address(xor_mapped, data[4:HEADER_SIZE], "XOR-MAPPED-ADDRESS")
    mapped = attributes.get(MAPPED_ADDRESS)
    if mapped is not None:
        return _address(mapped, None, "MAPPED-ADDRESS")
    raise StunError("STUN response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS")


def _attributes(data: bytes) -> dict[int, bytes]:
    """Each attribute's first value (§15). Past MESSAGE-INTEGRITY only FINGERPRINT counts
    (§15.4); FINGERPRINT must be last and match (§15.5). We sent no credentials, so
    MESSAGE-INTEGRITY cannot be checked and is not required."""
    found: dict[int, bytes] = {}
    offset = HEADER_SIZE
    integrity = False
    while offset + 4 <= len(data):  # the length is a multiple of 4: no header is cut short
        kind, size = struct.unpack_from("!HH", data, offset)
        start = offset + 4
        if start + size > len(data):
            raise StunError(f"STUN attribute {kind:#06x} of {size} bytes runs past the message")
        value = data[start : start + size]
        offset = start + (size + 3) // 4 * 4
        if kind == FINGERPRINT:
            _check_fingerprint(data, start - 4, value, last=offset >= len(data))
        elif not integrity:
            found.setdefault(kind, value)
        integrity = integrity or kind == MESSAGE_INTEGRITY
    return found


def _check_fingerprint(data: bytes, at: int, value: bytes, *, last: bool) -> None:
    if not last:
        raise StunError("STUN FINGERPRINT is not the last attribute")
    if len(value) != 4:
        raise StunError(f"STUN FINGERPRINT of {len(value)} bytes, expected 4")
    expected = zlib.crc32(data[:at]) ^ _FINGERPRINT_XOR
    if int.from_bytes(value, "big") != expected:
        raise StunError("STUN FINGERPRINT does not match the message")


def _address(value: bytes, mask: bytes | None, name: str) -> Address:
    """A (XOR-)MAPPED-ADDRESS value; `mask` is the cookie and transaction id for XOR (§15.2)."""
    if len(value) < 4:
        raise StunError(f"STUN {name} of {len(value)} bytes")
    family = value[1]
    size = _FAMILIES.get(family)
    if size is None:
        raise StunError(f"STUN {name} with unknown address family {family:#04x}")
    if len(value) != 4 + size:
        raise StunError(f"STUN {name} of {len(value)} bytes for a {size * 8}-bit address")
    port = int.from_bytes(value[2:4], "big")
    raw = value[4:]
    if mask is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
    host = ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw)
    return str(host), port


def _error(value: bytes) -> str:
    """ERROR-CODE (§15.6): class in the hundreds, number below 100, UTF-8 reason."""
    if len(value) < 4:
        raise StunError(f"STUN ERROR-CODE of {len(value)} bytes")
    code = (value[2] & 0x07) * 100 + value[3]
    reason = value[4:].decode("utf-8", errors="replace")[:_MAX_REASON]
    shown = "".join(char if char.isprintable() else "?" for char in reason).strip()
    return f"STUN error {code} {shown}".rstrip()
