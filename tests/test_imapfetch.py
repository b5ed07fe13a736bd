"""mailer/imapfetch.py reads FETCH replies exactly as IMAPClient's own parser does: the usual
shapes by its quick path, anything else by handing over to IMAPClient."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from mailer.imapfetch import parse_fetch

DATE = b'"14-Mar-2027 05:12:00 +0100"'


def _both(data: list[Any], normalise: bool = False) -> dict[int, Any]:
    expected = dict(parse_fetch_response(data, normalise, True))
    assert parse_fetch(data, normalise) == expected
    return expected


@pytest.mark.parametrize("normalise", [False, True])
def test_sizes_dates_flags_and_bodies(normalise: bool) -> None:
    body, head = b"Subject: hi\r\n\r\nbody\r\n", b"Subject: hi\r\n\r\n"
    data: list[Any] = [
        b"1 (UID 7 RFC822.SIZE 4055 INTERNALDATE " + DATE + b" FLAGS (\\Seen \\Recent))",
        b"2 (UID 9 RFC822.SIZE 0 INTERNALDATE " + DATE + b" FLAGS ())",
        (b"3 (UID 11 BODY[] {%d}" % len(body), body),
        b")",
        (b"4 (BODY[HEADER] {%d}" % len(head), head),
        (b" BODY[] {%d}" % len(body), body),
        b" UID 12 FLAGS (\\Flagged $Label 0123 NIL))",
    ]
    found = _both(data, normalise)
    assert found[7][b"RFC822.SIZE"] == 4055 and found[7][b"FLAGS"] == (b"\\Seen", b"\\Recent")
    assert found[11][b"BODY[]"] == body and found[12][b"BODY[HEADER]"] == head


@pytest.mark.parametrize(
    "data",
    [
        [b"5 (FLAGS (\\Seen))"],  # unsolicited, no UID: keyed by its sequence number
        [b'1 (UID 3 INTERNALDATE "not a date")'],
        [b"1 (UID 3 INTERNALDATE NIL X-GM-MSGID 123)"],  # a name the quick path leaves
        [b'1 (UID 3 INTERNALDATE "a \\"quoted\\" word")'],  # escapes: IMAPClient reads them
        [b"1 (UID 3 MODSEQ (12345) FLAGS (\\Seen))"],
        [b"1 (UID 3  RFC822.SIZE 5)"],  # two spaces
        [None],
        [],
    ],
)
def test_other_shapes_read_as_imapclient_reads_them(data: list[Any]) -> None:
    _both(data)


_atom = st.sampled_from([b"\\Seen", b"\\Answered", b"$Forwarded", b"NIL", b"0", b"007", b"42"])
_value = st.one_of(
    st.integers(0, 10**9).map(lambda n: str(n).encode()),
    st.sampled_from([DATE, b'""', b'"junk"', b"NIL", b"07"]),
    st.lists(_atom, max_size=4).map(lambda atoms: b"(" + b" ".join(atoms) + b")"),
)
_name = st.sampled_from([b"RFC822.SIZE", b"INTERNALDATE", b"FLAGS", b"MODSEQ", b"uid"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 50),
            st.integers(1, 10**6),
            st.lists(st.tuples(_name, _value), max_size=4),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
        max_size=6,
    )
)
def test_generated_replies_read_as_imapclient_reads_them(
    replies: list[tuple[int, int, list[tuple[bytes, bytes]], bytes | None]],
) -> None:
    data: list[Any] = []
    for seq, uid, items, literal in replies:
        text = b"%d (UID %d" % (seq, uid) + b"".join(b" " + n + b" " + v for n, v in items)
        if literal is None:
            data.append(text + b")")
        else:
            data += [(text + b" BODY[] {%d}" % len(literal), literal), b")"]
    try:
        expected = dict(parse_fetch_response(data, False, True))
    except Exception as exc:  # IMAPClient refuses it: so does the quick reader
        with pytest.raises(type(exc)):
            parse_fetch(data, False)
        return
    assert parse_fetch(data, False) == expected
