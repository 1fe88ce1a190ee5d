"""Renumbering P slices (H.264 §7.3.3 frame_num), which the still slate's GOP is built by."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.h264 import (
    H264ParseError,
    SliceNumbering,
    renumber_slice,
    slice_frame_num,
    slice_numbering,
)
from tests.unit.rtp.test_h264 import BitWriter


def sps(frame_num_bits: int, poc_type: int = 2, *, frame_mbs_only: int = 1) -> bytes:
    """A baseline SPS (H.264 §7.3.2.1.1) with the numbering fields under test."""
    w = BitWriter()
    w.u(8, 66)
    w.u(8, 0)
    w.u(8, 30)
    w.ue(0)  # seq_parameter_set_id
    w.ue(frame_num_bits - 4)
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(2)  # log2_max_pic_order_cnt_lsb_minus4
    w.ue(1)  # max_num_ref_frames
    w.u(1, 0)
    w.ue(19)
    w.ue(14)
    w.u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1)
    w.u(1, 0)  # no cropping
    w.u(1, 0)  # no VUI
    return w.nal(0x67)


def p_slice(frame_num: int, bits: int, rest: str, *, slice_type: int = 5) -> bytes:
    """A non-IDR slice: the header up to frame_num, then ``rest`` as given."""
    w = BitWriter()
    w.ue(0)  # first_mb_in_slice
    w.ue(slice_type)
    w.ue(0)  # pic_parameter_set_id
    w.u(bits, frame_num)
    w.bits.append(rest)
    return w.nal(0x41)


X264 = SliceNumbering(frame_num_bits=6, poc_type=2, colour_plane=False, frame_mbs_only=True)


def test_the_sps_says_how_wide_frame_num_is_and_how_pictures_are_ordered() -> None:
    assert slice_numbering(sps(6)) == X264
    assert slice_numbering(sps(16, poc_type=0)).poc_type == 0
    assert not slice_numbering(sps(4, frame_mbs_only=0)).frame_mbs_only


def test_renumbering_changes_frame_num_and_nothing_else() -> None:
    rest = "0110" * 40
    nal = p_slice(5, 6, rest)
    assert slice_frame_num(nal, X264) == 5
    assert renumber_slice(nal, X264, 9) == p_slice(9, 6, rest)
    assert renumber_slice(nal, X264, 64 + 9) == p_slice(9, 6, rest), "frame_num wraps"
    assert slice_frame_num(renumber_slice(nal, X264, 63), X264) == 63


def test_renumbering_adds_and_removes_emulation_prevention_where_the_bits_need_it() -> None:
    """With frame_num 0 the RBSP reads E0 00 00 01 and needs a 0x03 (§7.4.1); with 1 it
    reads E0 80 00 01 and must not have one."""
    rest = "0" * 15 + "00000001"
    zero, one = p_slice(0, 6, rest, slice_type=0), p_slice(1, 6, rest, slice_type=0)
    assert zero.startswith(b"\x41\xe0\x00\x00\x03\x01") and b"\x03" not in one[:5]
    assert renumber_slice(one, X264, 0) == zero
    assert renumber_slice(zero, X264, 1) == one


def test_only_non_idr_frame_slices_with_a_derived_order_are_renumbered() -> None:
    nal = p_slice(5, 6, "1")
    with pytest.raises(H264ParseError, match="NAL unit type 5 is not a non-IDR slice"):
        slice_frame_num(b"\x65" + nal[1:], X264)
    with pytest.raises(H264ParseError, match="POC type 0 slices carry their own order"):
        renumber_slice(nal, slice_numbering(sps(6, poc_type=0)), 6)
    with pytest.raises(H264ParseError, match="field-coded"):
        renumber_slice(nal, slice_numbering(sps(6, frame_mbs_only=0)), 6)
    with pytest.raises(H264ParseError, match="slice header ends early"):
        slice_frame_num(b"\x41\x80", X264)
    with pytest.raises(H264ParseError, match="empty NAL unit"):
        slice_frame_num(b"", X264)


@given(
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(4, 16),
    st.text("01", max_size=200),
)
def test_any_slice_renumbers_to_the_slice_written_with_that_number(
    old: int, new: int, bits: int, rest: str
) -> None:
    numbering = SliceNumbering(bits, 2, colour_plane=False, frame_mbs_only=True)
    old, new = old % (1 << bits), new % (1 << bits)
    renumbered = renumber_slice(p_slice(old, bits, rest), numbering, new)
    assert renumbered == p_slice(new, bits, rest)
    assert slice_frame_num(renumbered, numbering) == new


@given(st.binary(max_size=40))
def test_arbitrary_slice_bytes_read_as_a_number_or_a_parse_error(payload: bytes) -> None:
    with contextlib.suppress(H264ParseError):
        assert 0 <= slice_frame_num(payload, X264) < 64
