"""H.264 over RTP (RFC 6184) and the AVCC form FLV carries (ISO/IEC 14496-15).

The depacketizer takes jitter-buffer output and yields whole access units only: one with
any packet missing is dropped, never half-emitted, and ``keyframe_needed`` goes up so the
caller can send a PLI. It handles packetization-mode 0 and 1 (single NAL, STAP-A, FU-A);
the interleaved mode's STAP-B/MTAP/FU-B make the access unit count as damaged.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sip2rtmp.rtp.frames import FrameAssembler
from sip2rtmp.rtp.packet import RtpPacket

__all__ = [
    "AccessUnit",
    "H264Depacketizer",
    "H264ParseError",
    "SliceNumbering",
    "SpsInfo",
    "avc_decoder_configuration_record",
    "nal_type",
    "packetize_h264",
    "parse_sprop_parameter_sets",
    "parse_sps",
    "renumber_slice",
    "slice_frame_num",
    "slice_numbering",
    "split_annexb",
    "to_avcc",
]

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
FU_A = 28
_INTERLEAVED = frozenset((25, 26, 27, 29))  # STAP-B, MTAP16, MTAP24, FU-B (RFC 6184 §5.2)
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))

MAX_PARAMETER_SET_SIZE = 1024
"""Largest SPS or PPS NAL unit we parse or keep, in bytes. Real ones are under 100 bytes; an
SPS carrying every 4:2:0 scaling list at its largest deltas stays under 600."""
MAX_PARAMETER_SETS = 8
"""NAL units an fmtp sprop-parameter-sets value may carry (RFC 6184 §8.1): an SPS and a PPS,
a few of each at most."""
MAX_ACCESS_UNIT_NALS = 4096
"""NAL units per access unit. A 1080p picture at the largest size any level allows (1.6 MB,
H.264 Annex A MinCR 2), cut into a slice per 1,200-byte packet, is about 1,400 slices."""
_MAX_PICTURE_MBS = 1055
"""Width or height in macroblocks: at most Sqrt(8 * MaxFS) at the highest level, 6.2 (H.264
A.3.1 f, g); a larger SPS is hostile, and its size must not reach a decoder or an encoder."""
_MAX_POC_CYCLE = 255  # num_ref_frames_in_pic_order_cnt_cycle, H.264 §7.4.2.1.1
_MAX_BIT_DEPTH = 14  # bit_depth_luma/chroma_minus8 is 0..6, H.264 §7.4.2.1.1
_MAX_BASE64_SET = 4 * -(-MAX_PARAMETER_SET_SIZE // 3)  # base64 length of the largest set


class H264ParseError(ValueError):
    """A parameter set or fmtp value that cannot be decoded."""


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One picture's NAL units (no start codes) at one RTP timestamp."""

    timestamp: int
    nals: tuple[bytes, ...]
    keyframe: bool


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What we need from a sequence parameter set (ITU-T H.264 §7.3.2.1.1)."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class SliceNumbering:
    """How a sequence's slice headers number their pictures (H.264 §7.3.3): the width of
    frame_num, and how the picture order count is sent (type 2: derived from frame_num)."""

    frame_num_bits: int
    poc_type: int
    colour_plane: bool
    frame_mbs_only: bool


class _Bits:
    """MSB-first bit reader over an RBSP.

    Each read slices only the bytes it covers, so parsing costs time linear in the bits read;
    holding the RBSP as one big int would cost a shift of the whole of it per read.
    """

    __slots__ = ("_data", "_position", "_size", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._what = what
        self._position = 0
        self._size = 8 * len(data)

    def u(self, count: int) -> int:
        start = self._position
        end = start + count
        if end > self._size:
            raise H264ParseError(f"{self._what} ends early")
        self._position = end
        last_byte = (end + 7) >> 3
        window = int.from_bytes(self._data[start >> 3 : last_byte], "big")
        return (window >> (8 * last_byte - end)) & ((1 << count) - 1)

    @property
    def position(self) -> int:
        return self._position

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise H264ParseError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    """H.264 §7.3.2.1.1.1: only the delta_scale values need consuming."""
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se()) % 256
        last = next_scale or last


def parse_sps(nal: bytes) -> SpsInfo:
    """Decode profile, level, chroma format and the cropped picture size from an SPS NAL."""
    return _parse_sps(nal)[0]


def slice_numbering(sps: bytes) -> SliceNumbering:
    """How slices of the sequence an SPS NAL unit opens carry frame_num and the POC."""
    return _parse_sps(sps)[1]


def _parse_sps(nal: bytes) -> tuple[SpsInfo, SliceNumbering]:
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        raise H264ParseError("not an SPS NAL unit")
    if len(nal) > MAX_PARAMETER_SET_SIZE:
        raise H264ParseError(f"SPS of {len(nal)} bytes, over {MAX_PARAMETER_SET_SIZE}")
    bits = _Bits(_unescape(nal[1:]), "SPS")
    profile, constraints, level = bits.u(8), bits.u(8), bits.u(8)
    bits.ue()  # seq_parameter_set_id
    chroma, separate_planes, depth_luma, depth_chroma = 1, 0, 8, 8
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma > 3:
            raise H264ParseError(f"chroma_format_idc {chroma}")
        if chroma == 3:
            separate_planes = bits.u(1)
        depth_luma = bits.ue() + 8
        depth_chroma = bits.ue() + 8
        if max(depth_luma, depth_chroma) > _MAX_BIT_DEPTH:
            raise H264ParseError(f"bit depth {max(depth_luma, depth_chroma)}")
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    frame_num_bits = bits.ue() + 4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
        if cycle > _MAX_POC_CYCLE:
            raise H264ParseError(f"pic_order_cnt cycle of {cycle} frames")
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise H264ParseError(f"pic_order_cnt_type {poc_type}")
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    if max(width_mbs, height_units) > _MAX_PICTURE_MBS:
        raise H264ParseError(f"SPS picture of {width_mbs}x{height_units} macroblocks")
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if bits.u(1):
        crop_left, crop_right, crop_top, crop_bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    array_type = 0 if separate_planes else chroma
    if array_type == 0:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        unit_x = 2 if chroma in (1, 2) else 1
        unit_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
    width = 16 * width_mbs - unit_x * (crop_left + crop_right)
    height = 16 * height_units * (2 - frame_mbs_only) - unit_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise H264ParseError(f"SPS crops the picture to {width}x{height}")
    info = SpsInfo(profile, constraints, level, chroma, depth_luma, depth_chroma, width, height)
    numbering = SliceNumbering(
        frame_num_bits, poc_type, bool(separate_planes), bool(frame_mbs_only)
    )
    return info, numbering


def slice_frame_num(nal: bytes, numbering: SliceNumbering) -> int:
    """frame_num of a non-IDR slice NAL unit."""
    bits = _Bits(_unescape(nal[1:]), "slice header")
    _skip_to_frame_num(nal, bits, numbering)
    return bits.u(numbering.frame_num_bits)


def renumber_slice(nal: bytes, numbering: SliceNumbering, frame_num: int) -> bytes:
    """A copy of a non-IDR slice NAL unit as the picture numbered ``frame_num``, every other
    bit the same: a picture that repeats its reference exactly, as a still slate's P frames
    do, can then be replayed anywhere after it in its GOP. Only for POC type 2, where the
    picture order follows frame_num (H.264 §8.2.1.3); other types carry an order count."""
    if numbering.poc_type != 2:
        raise H264ParseError(f"POC type {numbering.poc_type} slices carry their own order")
    rbsp = _unescape(nal[1:])
    bits = _Bits(rbsp, "slice header")
    _skip_to_frame_num(nal, bits, numbering)
    start, width = bits.position, numbering.frame_num_bits
    bits.u(width)
    first, last = start >> 3, (start + width + 7) >> 3
    shift = 8 * last - start - width
    window = int.from_bytes(rbsp[first:last], "big") & ~(((1 << width) - 1) << shift)
    window |= (frame_num % (1 << width)) << shift
    patched = rbsp[:first] + window.to_bytes(last - first, "big") + rbsp[last:]
    return nal[:1] + _escape(patched)


def _skip_to_frame_num(nal: bytes, bits: _Bits, numbering: SliceNumbering) -> None:
    """Read a slice header up to its frame_num (H.264 §7.3.3)."""
    if not nal:
        raise H264ParseError("empty NAL unit")
    if nal_type(nal) != NAL_SLICE:
        raise H264ParseError(f"NAL unit type {nal_type(nal)} is not a non-IDR slice")
    if not numbering.frame_mbs_only:
        raise H264ParseError("field-coded sequences are not renumbered")
    bits.ue()  # first_mb_in_slice
    bits.ue()  # slice_type
    bits.ue()  # pic_parameter_set_id
    if numbering.colour_plane:
        bits.u(2)  # colour_plane_id


def _unescape(data: bytes) -> bytes:
    """The RBSP of a NAL unit's payload: emulation prevention bytes removed (H.264 §7.4.1)."""
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


_EMULATED = re.compile(b"\x00\x00(?=[\x00-\x03])")


def _escape(rbsp: bytes) -> bytes:
    """A NAL unit payload from an RBSP: 0x03 after two zero bytes before 0x00-0x03 (§7.4.1)."""
    return _EMULATED.sub(b"\x00\x00\x03", rbsp)


def parse_sprop_parameter_sets(value: str) -> list[bytes]:
    """NAL units from an fmtp sprop-parameter-sets value (RFC 6184 §8.1).

    At most `MAX_PARAMETER_SETS` sets of at most `MAX_PARAMETER_SET_SIZE` bytes each.
    """
    parts = value.split(",", MAX_PARAMETER_SETS)
    if len(parts) > MAX_PARAMETER_SETS:
        raise H264ParseError(f"sprop-parameter-sets names over {MAX_PARAMETER_SETS} sets")
    nals: list[bytes] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if len(part) > _MAX_BASE64_SET:
            raise H264ParseError(f"sprop-parameter-sets entry of {len(part)} characters")
        try:
            nal = base64.b64decode(part + "=" * (-len(part) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise H264ParseError(f"bad base64 in sprop-parameter-sets: {part[:40]!r}") from exc
        if len(nal) > MAX_PARAMETER_SET_SIZE:  # 1,368 characters can still decode to 1,026 bytes
            raise H264ParseError(
                f"sprop-parameter-sets entry of {len(nal)} bytes, over {MAX_PARAMETER_SET_SIZE}"
            )
        if nal:
            nals.append(nal)
    return nals


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units from an Annex B byte stream (3- or 4-byte start codes).

    Zero bytes after a NAL unit, the last one included, are the stream's (trailing_zero_8bits,
    H.264 B.2): a NAL unit never ends in 0x00 (§7.4.1).
    """
    nals: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        end = data.find(b"\x00\x00\x01", begin)
        nal = (data[begin:] if end < 0 else data[begin:end]).rstrip(b"\x00")
        if nal:
            nals.append(nal)
        start = end
    return nals


def to_avcc(nals: Sequence[bytes]) -> bytes:
    """4-byte length-prefixed NAL units, the sample format FLV and MP4 carry."""
    return b"".join(struct.pack("!I", len(nal)) + nal for nal in nals)


def avc_decoder_configuration_record(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1) with 4-byte NAL lengths."""
    if not sps or not pps:
        raise H264ParseError("need at least one SPS and one PPS")
    if len(sps) > 31 or len(pps) > 255:  # 5- and 8-bit counts in the record
        raise H264ParseError(f"{len(sps)} SPS and {len(pps)} PPS do not fit the record")
    if not all(0 < len(nal) <= MAX_PARAMETER_SET_SIZE for nal in (*sps, *pps)):
        raise H264ParseError("empty or oversized parameter set")
    info = parse_sps(sps[0])
    record = bytearray((1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)))
    for nal in sps:
        record += struct.pack("!H", len(nal)) + nal
    record.append(len(pps))
    for nal in pps:
        record += struct.pack("!H", len(nal)) + nal
    if info.profile_idc in (100, 110, 122, 144):
        record += bytes(
            (
                0xFC | info.chroma_format_idc,
                0xF8 | (info.bit_depth_luma - 8),
                0xF8 | (info.bit_depth_chroma - 8),
                0,
            )
        )
    return bytes(record)


def packetize_h264(nals: Sequence[bytes], max_payload: int = 1200) -> list[bytes]:
    """RTP payloads for one access unit (packetization-mode 1; RFC 6184 §5.7.1, §5.8).

    Small neighbours are aggregated into STAP-A, large NALs split into FU-A. The caller
    sets the marker bit on the last payload.
    """
    if max_payload < 3:
        raise ValueError("max_payload too small for FU-A")
    payloads: list[bytes] = []
    group: list[bytes] = []
    group_size = 1

    def flush() -> None:
        nonlocal group_size
        if len(group) == 1:
            payloads.append(group[0])
        elif group:
            nri = max(nal[0] & 0x60 for nal in group)
            payloads.append(
                bytes((nri | STAP_A,)) + b"".join(struct.pack("!H", len(n)) + n for n in group)
            )
        group.clear()
        group_size = 1

    for nal in nals:
        if not nal:
            continue
        if len(nal) > max_payload:
            flush()
            indicator = (nal[0] & 0xE0) | FU_A
            kind = nal[0] & 0x1F
            body = nal[1:]
            chunk = max_payload - 2
            for offset in range(0, len(body), chunk):
                header = kind
                if offset == 0:
                    header |= 0x80
                if offset + chunk >= len(body):
                    header |= 0x40
                payloads.append(bytes((indicator, header)) + body[offset : offset + chunk])
            continue
        if group_size + 2 + len(nal) > max_payload:
            flush()
        group.append(nal)
        group_size += 2 + len(nal)
    flush()
    return payloads


class H264Depacketizer(FrameAssembler["AccessUnit"]):
    """Reassembles access units from ordered RTP packets and loss markers.

    Besides the frame caps, an access unit holds at most `MAX_ACCESS_UNIT_NALS` NAL units, and
    an SPS or PPS (single, aggregated, or an FU-A checked as it grows) at most
    `MAX_PARAMETER_SET_SIZE` bytes; past either the access unit is damaged, and an oversized
    parameter set never becomes the stream's.
    """

    def __init__(
        self, parameter_sets: Sequence[bytes] = (), *, wait_for_keyframe: bool = True
    ) -> None:
        super().__init__(wait_for_keyframe=wait_for_keyframe)
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self._nals: list[bytes] = []
        self._fragment: bytearray | None = None
        for nal in parameter_sets:
            self._note_parameter_set(nal)

    def _note_parameter_set(self, nal: bytes) -> None:
        if not nal or len(nal) > MAX_PARAMETER_SET_SIZE:
            return
        kind = nal_type(nal)
        if kind == NAL_SPS:
            self.sps = nal
        elif kind == NAL_PPS:
            self.pps = nal

    def decoder_config(self) -> bytes | None:
        """The AVCDecoderConfigurationRecord for the current SPS/PPS, once both are known."""
        if self.sps is None or self.pps is None:
            return None
        try:
            return avc_decoder_configuration_record([self.sps], [self.pps])
        except H264ParseError:
            return None

    @property
    def resolution(self) -> tuple[int, int] | None:
        if self.sps is None:
            return None
        try:
            info = parse_sps(self.sps)
        except H264ParseError:
            return None
        return info.width, info.height

    def _add(self, packet: RtpPacket) -> None:
        self._depacketize(packet.payload)

    def _complete(self, nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if len(self._nals) >= MAX_ACCESS_UNIT_NALS or (
            kind in (NAL_SPS, NAL_PPS) and len(nal) > MAX_PARAMETER_SET_SIZE
        ):
            self._damaged = True
            return
        self._nals.append(nal)
        if kind in (NAL_SPS, NAL_PPS):
            self._note_parameter_set(nal)

    def _depacketize(self, payload: bytes) -> None:
        if not payload or payload[0] & 0x80:
            self._damaged = True  # empty, or forbidden_zero_bit set (RFC 6184 §5.3)
            return
        kind = payload[0] & 0x1F
        if kind == FU_A:
            self._fu_a(payload)
            return
        if self._fragment is not None:
            self._damaged = True
            self._fragment = None
        if 1 <= kind <= 23:
            self._complete(payload)
        elif kind == STAP_A:
            offset = 1
            end = len(payload)
            while offset < end and not self._damaged:
                if offset + 2 > end:
                    self._damaged = True
                    return
                size = (payload[offset] << 8) | payload[offset + 1]
                offset += 2
                if size == 0 or offset + size > end:
                    self._damaged = True
                    return
                self._complete(payload[offset : offset + size])
                offset += size
        elif kind in _INTERLEAVED:
            self._damaged = True

    def _fu_a(self, payload: bytes) -> None:
        if len(payload) < 3:
            self._damaged = True
            return
        header = payload[1]
        start, end = header & 0x80, header & 0x40
        if start and end:
            self._damaged = True
            return
        if start:
            if self._fragment is not None:
                self._damaged = True
            self._fragment = bytearray(((payload[0] & 0xE0) | (header & 0x1F),))
        elif self._fragment is None:
            self._damaged = True
            return
        fragment = self._fragment
        fragment += payload[2:]
        if (fragment[0] & 0x1F) in (NAL_SPS, NAL_PPS) and len(fragment) > MAX_PARAMETER_SET_SIZE:
            self._damaged = True  # a parameter set this large is refused before it is whole
            return
        if end:
            self._complete(bytes(fragment))
            self._fragment = None

    def _release(self) -> None:
        self._nals = []
        self._fragment = None

    def _finish(self, out: list[AccessUnit]) -> None:
        """Close the access unit being built; emit it only if every packet made it."""
        unfinished_fragment = self._fragment is not None
        nals = self._nals
        self._release()
        closed = self._close()
        if closed is None:
            return
        timestamp, damaged = closed
        if damaged or unfinished_fragment:
            self._drop()
        elif nals:
            keyframe = any(nal[0] & 0x1F == NAL_IDR for nal in nals)
            self._deliver(AccessUnit(timestamp, tuple(nals), keyframe), out)
