"""`rapport import` and `rapport round create` refuse bad input: exit 2, a message naming the file,
line, column and field on stderr, and the database exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, Result

Cli = Callable[..., Result]
pytestmark = pytest.mark.databases("sqlite", "postgresql")
Files = dict[str, Any]  # file name -> str or bytes; for a round, "args" -> the command's words

PEOPLE = (
    "email,name,country,timezone,language\n"
    "ann@example.org,Ann Dupont,FR,Europe/Paris,fr\n"
    "bob@example.org,Bob Tane,NZ,Pacific/Auckland,en\n"
    "chiara@example.org,Chiara Rossi,IT,Europe/Rome,en\n"
    "dev@example.org,Dev Patel,IN,Asia/Kolkata,en\n"
    "eve@example.org,Eve Otieno,KE,Africa/Nairobi,en\n"
    "gus@example.org,Gustavo Lima,BR,America/Sao_Paulo,es\n"
)
ROUND = "2027-spring"
HEADER = "email,name,country,timezone,language\n"
COORDINATORS = "email,name,role,countries,timezone\n"
PAIRS = "round,member_a,member_b\n"
PAIRS3 = "round,member_a,member_b,member_c\n"


def topic(title: str = "Hello", order: int | str = 1, extra: str = "", body: str = "Text.") -> str:
    return f'+++\ntitle = "{title}"\norder = {order}\n{extra}+++\n{body}\n'


def translation(title: str = "Bonjour", extra: str = "") -> str:
    return f'+++\ntitle = "{title}"\n{extra}+++\nTexte.\n'


def person(email: str = "zoe@example.org", name: str = "Zoë", rest: str = "NZ,UTC,en") -> str:
    return f"{email},{name},{rest}\n"


# (id, kind, files, expected substrings of stderr).  kind is participants, coordinators,
# partnerships (a CSV file of that name), topics (a folder of files) or round (a command line).
CASES: list[tuple[str, str, Files, tuple[str, ...]]] = [
    # -- participants ------------------------------------------------------------------------
    (
        "malformed-address",
        "participants",
        {"participants.csv": HEADER + person("not-an-address")},
        ("participants.csv:2:1: email: not a valid email address: 'not-an-address'",),
    ),
    (
        "address-without-domain-dot",
        "participants",
        {"participants.csv": HEADER + person("zoe@localhost")},
        ("participants.csv:2:1: email: not a valid email address",),
    ),
    (
        "non-ascii-address",
        "participants",
        {"participants.csv": HEADER + person("王芳@example.org")},
        ("participants.csv:2:1: email: not a valid email address",),
    ),
    (
        "duplicate-participant",
        "participants",
        {"participants.csv": HEADER + person("zoe@example.org") + person("ZOE@Example.org")},
        ("participants.csv:3:1: email: zoe@example.org is already on line 2",),
    ),
    (
        "unknown-country",
        "participants",
        {"participants.csv": HEADER + person(rest="XZ,UTC,en")},
        ("participants.csv:2:3: country: unknown country code 'XZ'",),
    ),
    (
        "country-name-not-code",
        "participants",
        {"participants.csv": HEADER + person(rest="France,Europe/Paris,fr")},
        ("participants.csv:2:3: country: unknown country code 'France'",),
    ),
    (
        "unknown-zone",
        "participants",
        {"participants.csv": HEADER + person(rest="NZ,Pacific/Atlantis,en")},
        ("participants.csv:2:4: timezone: unknown time zone 'Pacific/Atlantis'",),
    ),
    (
        "offset-is-not-a-zone",
        "participants",
        {"participants.csv": HEADER + person(rest="NZ,+12:00,en")},
        ("participants.csv:2:4: timezone: unknown time zone '+12:00'",),
    ),
    (
        "language-shape",
        "participants",
        {"participants.csv": HEADER + person(rest="NZ,UTC,English")},
        ("participants.csv:2:5: language: 'English' is not a language code",),
    ),
    (
        "unknown-language",
        "participants",
        {"participants.csv": HEADER + person(rest="NZ,UTC,qq")},
        ("participants.csv:2:5: language: unknown language 'qq'",),
    ),
    (
        "empty-name",
        "participants",
        {"participants.csv": HEADER + person(name="  ")},
        ("participants.csv:2:2: name: must not be empty",),
    ),
    (
        "line-feed-in-quoted-field",
        "participants",
        {"participants.csv": HEADER + person(name='"Zoë\nWhitfield"') + person("amy@example.org")},
        ("participants.csv:2:2: name: contains a line break",),
    ),
    (
        "carriage-return-in-quoted-field",
        "participants",
        {"participants.csv": HEADER + person(name='"Zoë\rWhitfield"')},
        ("participants.csv:2:2: name: contains a line break",),
    ),
    (
        "carriage-return-unquoted",
        "participants",
        {"participants.csv": HEADER + person(name="Zoë\rWhitfield")},
        ("participants.csv:2: a carriage return (CR) inside a field",),
    ),
    (
        "reading-goes-on-after-a-broken-record",
        "participants",
        {
            "participants.csv": HEADER
            + person(name="Zoë\rWhitfield")
            + person("amy@example.org", rest="NZ,UTC,xx")
        },
        (
            "participants.csv:2: a carriage return (CR) inside a field",
            "participants.csv:3:5: language: unknown language 'xx'",
        ),
    ),
    (
        "nul-in-field",
        "participants",
        {"participants.csv": HEADER + person(name="Zo\0ë")},
        ("participants.csv:2:2: name: contains a NUL character",),
    ),
    (
        "tab-in-name",
        "participants",
        {"participants.csv": HEADER + person(name="Bob\tY")},
        ("participants.csv:2:2: name: contains a control character (U+0009)",),
    ),
    (
        "vertical-tab-in-name",
        "participants",
        {"participants.csv": HEADER + person(name="Ann\x0bX")},
        ("participants.csv:2:2: name: contains a control character (U+000B)",),
    ),
    (
        "line-separator-in-name",
        "participants",
        {"participants.csv": HEADER + person(name="Ann\u2028X")},
        ("participants.csv:2:2: name: contains a control character (U+2028)",),
    ),
    (
        "not-utf8",
        "participants",
        {
            "participants.csv": (HEADER + person() + person("amy@example.org", "Amélie")).encode(
                "latin-1"
            )
        },
        ("participants.csv:3: not UTF-8: byte 0xe9",),
    ),
    (
        "utf16",
        "participants",
        {"participants.csv": (HEADER + person()).encode("utf-16")},
        ("participants.csv:1: the file is UTF-16",),
    ),
    (
        "empty-file",
        "participants",
        {"participants.csv": ""},
        ("participants.csv:1: the file is empty",),
    ),
    (
        "only-a-bom",
        "participants",
        {"participants.csv": "\ufeff\n"},
        ("participants.csv:1: the file is empty",),
    ),
    (
        "missing-column",
        "participants",
        {"participants.csv": "email,name,country,timezone\nzoe@example.org,Zoë,NZ,UTC\n"},
        ("participants.csv:1: language: required column is missing",),
    ),
    (
        "unknown-column",
        "participants",
        {"participants.csv": HEADER.strip() + ",nickname\n" + person().strip() + ",Zo\n"},
        ("participants.csv:1:6: nickname: unknown column",),
    ),
    (
        "duplicate-column",
        "participants",
        {"participants.csv": "email,name,name,country,timezone,language\n"},
        ("participants.csv:1:3: name: duplicate column (also column 2)",),
    ),
    (
        "short-row",
        "participants",
        {"participants.csv": HEADER + "zoe@example.org,Zoë,NZ,UTC\n"},
        ("participants.csv:2: 4 fields, but the header has 5 columns",),
    ),
    (
        "unclosed-quote",
        "participants",
        {"participants.csv": HEADER + person() + 'amy@example.org,"Amy,NZ,UTC,en\n'},
        ("participants.csv:3: a quoted field is never closed",),
    ),
    (
        "name-too-long",
        "participants",
        {"participants.csv": HEADER + person(name="x" * 201)},
        ("participants.csv:2:2: name: longer than 200 characters",),
    ),
    (
        "no-such-file",
        "participants",
        {},
        ("participants.csv: no such file",),
    ),
    (
        "every-problem-at-once",
        "participants",
        {
            "participants.csv": HEADER
            + person("bad")
            + person(rest="XZ,UTC,en")
            + person("amy@example.org", rest="NZ,Nowhere/City,en")
        },
        (
            "participants.csv:2:1: email:",
            "participants.csv:3:3: country:",
            "participants.csv:4:4: timezone:",
        ),
    ),
    # -- coordinators ------------------------------------------------------------------------
    (
        "coordinator-role",
        "coordinators",
        {"coordinators.csv": COORDINATORS + "ruth@example.org,Ruth,boss,,\n"},
        ("coordinators.csv:2:3: role: expected program or country; got 'boss'",),
    ),
    (
        "country-coordinator-without-countries",
        "coordinators",
        {"coordinators.csv": COORDINATORS + "ines@example.org,Inés,country,,\n"},
        ("coordinators.csv:2:4: countries: must not be empty",),
    ),
    (
        "coordinator-unknown-country",
        "coordinators",
        {"coordinators.csv": COORDINATORS + "ines@example.org,Inés,country,ES ZZ,\n"},
        ("coordinators.csv:2:4: countries: unknown country code 'ZZ'",),
    ),
    (
        "coordinator-zone",
        "coordinators",
        {"coordinators.csv": COORDINATORS + "ruth@example.org,Ruth,program,,Sydney\n"},
        ("coordinators.csv:2:5: timezone: unknown time zone 'Sydney'",),
    ),
    (
        "coordinator-duplicate",
        "coordinators",
        {
            "coordinators.csv": COORDINATORS
            + "ruth@example.org,Ruth,program,,\n"
            + "Ruth@example.org,Ruth A.,program,,\n"
        },
        ("coordinators.csv:3:1: email: ruth@example.org is already on line 2",),
    ),
    (
        "coordinator-missing-countries-column",
        "coordinators",
        {"coordinators.csv": "email,name,role\nruth@example.org,Ruth,program\n"},
        ("coordinators.csv:1: countries: required column is missing",),
    ),
    # -- partnerships ------------------------------------------------------------------------
    (
        "unknown-participant",
        "partnerships",
        {"partnerships.csv": PAIRS + f"{ROUND},ann@example.org,nobody@example.org\n"},
        ("partnerships.csv:2:3: member_b: no participant nobody@example.org",),
    ),
    (
        "same-participant-twice",
        "partnerships",
        {"partnerships.csv": PAIRS + f"{ROUND},ann@example.org,ANN@example.org\n"},
        ("partnerships.csv:2:3: member_b: ann@example.org is already a member of this",),
    ),
    (
        "two-partnerships-in-file",
        "partnerships",
        {
            "partnerships.csv": PAIRS3
            + f"{ROUND},ann@example.org,bob@example.org,\n"
            + f"{ROUND},chiara@example.org,dev@example.org,bob@example.org\n"
        },
        (
            "partnerships.csv:3:4: member_c:"
            " bob@example.org is already in the partnership on line 2",
        ),
    ),
    (
        "already-partnered-in-database",
        "partnerships",
        {"partnerships.csv": PAIRS + f"{ROUND},ann@example.org,eve@example.org\n"},
        (
            "partnerships.csv:2:3: member_b:"
            " eve@example.org is already partnered with gus@example.org",
        ),
    ),
    (
        "unknown-round",
        "partnerships",
        {"partnerships.csv": PAIRS + "2026-autumn,ann@example.org,bob@example.org\n"},
        ("partnerships.csv:2:1: round: no such round '2026-autumn'",),
    ),
    (
        "malformed-member",
        "partnerships",
        {"partnerships.csv": PAIRS + f"{ROUND},ann@@example.org,bob@example.org\n"},
        ("partnerships.csv:2:2: member_a: not a valid email address",),
    ),
    (
        "empty-member",
        "partnerships",
        {"partnerships.csv": PAIRS + f"{ROUND},ann@example.org,\n"},
        ("partnerships.csv:2:3: member_b: must not be empty",),
    ),
    (
        "missing-member-column",
        "partnerships",
        {"partnerships.csv": "round,member_a\n" + f"{ROUND},ann@example.org\n"},
        ("partnerships.csv:1: member_b: required column is missing",),
    ),
    (
        "partnerships-extra-column",
        "partnerships",
        {"partnerships.csv": PAIRS3.strip() + ",member_d\n"},
        ("partnerships.csv:1:5: member_d: unknown column",),
    ),
    # -- topics ------------------------------------------------------------------------------
    (
        "topic-unknown-key",
        "topics",
        {"01-intro.md": topic(extra='colour = "red"\n')},
        ("01-intro.md:4: colour: unknown key (known: title, order, send_on)",),
    ),
    (
        "translation-without-base",
        "topics",
        {"01-intro.md": topic(), "02-day.fr.md": translation()},
        ("02-day.fr.md: a translation of 02-day.md, which is not in this folder",),
    ),
    (
        "two-topics-one-order",
        "topics",
        {"01-intro.md": topic(), "02-day.md": topic(title="A day")},
        ("02-day.md:3: order: order 1 is also 01-intro.md's",),
    ),
    (
        "toml-error-line-offset",
        "topics",
        {"01-intro.md": topic(extra="send_on = 2027-13-01\n")},
        ("01-intro.md:4:", "front matter:"),
    ),
    (
        "topic-without-title",
        "topics",
        {"01-intro.md": "+++\norder = 1\n+++\nText.\n"},
        ("01-intro.md:1: title: is required",),
    ),
    (
        "topic-order-zero",
        "topics",
        {"01-intro.md": topic(order=0)},
        ("01-intro.md:3: order: must be a whole number from 1 to 500; got 0",),
    ),
    (
        "topic-title-control-character",
        "topics",
        {"01-intro.md": topic(title="Hello\\u0007there")},
        (
            "01-intro.md:2: title: must be one line of text;"
            " it contains a control character (U+0007)",
        ),
    ),
    (
        "topic-order-huge",
        "topics",
        {"01-intro.md": topic(order=1000000)},
        ("01-intro.md:3: order: must be a whole number from 1 to 500; got 1000000",),
    ),
    (
        "topic-order-text",
        "topics",
        {"01-intro.md": topic(order='"one"')},
        ("01-intro.md:3: order: must be a whole number from 1 to 500; got 'one'",),
    ),
    (
        "send-on-quoted",
        "topics",
        {"01-intro.md": topic(extra='send_on = "2027-03-01"\n')},
        ("01-intro.md:4: send_on: must be a date like 2027-03-15",),
    ),
    (
        "send-on-with-time",
        "topics",
        {"01-intro.md": topic(extra="send_on = 2027-03-01T09:00:00\n")},
        ("01-intro.md:4: send_on: must be a date like 2027-03-15",),
    ),
    (
        "translation-order-differs",
        "topics",
        {"01-intro.md": topic(), "01-intro.fr.md": translation(extra="order = 2\n")},
        ("01-intro.fr.md:3: order: 2 differs from the base file 01-intro.md (order = 1)",),
    ),
    (
        "translation-in-default-language",
        "topics",
        {"01-intro.md": topic(), "01-intro.en.md": translation()},
        ("01-intro.en.md: en is the default language",),
    ),
    (
        "translation-unknown-language",
        "topics",
        {"01-intro.md": topic(), "01-intro.qq.md": translation()},
        ("01-intro.qq.md: the file name's language: unknown language 'qq'",),
    ),
    (
        "no-front-matter",
        "topics",
        {"01-intro.md": "# Hello\n\nText.\n"},
        ("01-intro.md:1: must start with a line +++",),
    ),
    (
        "front-matter-not-closed",
        "topics",
        {"01-intro.md": '+++\ntitle = "Hello"\norder = 1\n\nText.\n'},
        ("01-intro.md:1: the front matter is never closed",),
    ),
    (
        "topic-without-body",
        "topics",
        {"01-intro.md": topic(body="\n   \n")},
        ("01-intro.md:4: the topic has no text after the front matter",),
    ),
    (
        "topic-not-utf8",
        "topics",
        {"01-intro.md": topic(body="Caf\u00e9 au lait.").encode("latin-1")},
        ("01-intro.md:5: not UTF-8",),
    ),
    (
        "empty-topic-folder",
        "topics",
        {"README.txt": "nothing here"},
        ("topics: no topic files (NAME.md) in this folder",),
    ),
    # -- rounds ------------------------------------------------------------------------------
    (
        "round-name-with-space",
        "round",
        {"args": ("spring 2027",)},
        ("round 'spring 2027': a name may use only letters, digits",),
    ),
    (
        "round-name-with-slash",
        "round",
        {"args": ("2027/spring",)},
        ("a name may use only letters, digits",),
    ),
    (
        "round-exists",
        "round",
        {"args": (ROUND,)},
        (f"round {ROUND}: already exists",),
    ),
    (
        "round-ends-before-start",
        "round",
        {"args": ("2027-autumn", "--end", "2027-02-01")},
        ("round 2027-autumn: the end (2027-02-01) must be after the start (2027-03-01)",),
    ),
]


def setup(project: Project, cli: Cli) -> None:
    """Six participants, the round 2027-spring and one partnership (eve and gus) in it."""
    folder = project.dir / "setup"
    folder.mkdir()
    (folder / "people.csv").write_text(PEOPLE, encoding="utf-8")
    (folder / "pairs.csv").write_text(PAIRS + f"{ROUND},eve@example.org,gus@example.org\n")
    for args in (
        ("import", "participants", folder / "people.csv"),
        ("round", "create", ROUND, "--start", "2027-03-01"),
        ("import", "partnerships", folder / "pairs.csv"),
    ):
        result = cli("--config", project.config, *args)
        assert result.code == 0, result.err


def command(project: Project, kind: str, files: Files) -> list[object]:
    """Write the case's files and return the command line that imports them."""
    folder = project.dir / "in"
    if kind == "round":
        return ["round", "create", *files["args"], "--start", "2027-03-01"]
    target = folder / "topics" if kind == "topics" else folder
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (target / name).write_bytes(data)
    if kind == "topics":
        return ["import", "topics", target, "--round", ROUND]
    return ["import", kind, folder / f"{kind}.csv"]


@pytest.mark.parametrize(
    ("kind", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused(
    project: Project,
    cli: Cli,
    kind: str,
    files: Files,
    expected: tuple[str, ...],
) -> None:
    """Bad input exits 2 with a message naming file, line, column and field; nothing changes."""
    setup(project, cli)
    args = command(project, kind, files)
    before = project.dump()
    result = cli("--config", project.config, *args)
    assert result.code == 2, (result.out, result.err)
    for text in expected:
        assert text in result.err, result.err
    assert "Traceback" not in result.err
    assert project.dump() == before


def test_unknown_topic_round_is_refused(project: Project, cli: Cli) -> None:
    """Topics for a round that does not exist are refused with exit 2 and nothing written."""
    setup(project, cli)
    args = command(project, "topics", {"01-intro.md": topic()})
    args[args.index(ROUND)] = "2030-never"
    before = project.dump()
    result = cli("--config", project.config, *args)
    assert result.code == 2
    assert "round 2030-never: no such round" in result.err
    assert project.dump() == before


def test_dry_run_validates_and_writes_nothing(project: Project, cli: Cli) -> None:
    """--dry-run on a good file reports what it would do, exits 0 and changes nothing."""
    setup(project, cli)
    args = command(project, "participants", {"participants.csv": HEADER + person()})
    before = project.dump()
    result = cli("--config", project.config, *args, "--dry-run")
    assert (result.code, result.out) == (
        0,
        "dry run, nothing written: participants: 1 created, 0 updated, 0 unchanged\n",
    )
    assert project.dump() == before


def test_dry_run_still_refuses_bad_input(project: Project, cli: Cli) -> None:
    """--dry-run on a bad file reports the problems with exit 2, like a real import."""
    setup(project, cli)
    args = command(project, "participants", {"participants.csv": HEADER + person("bad")})
    result = cli("--config", project.config, *args, "--dry-run")
    assert result.code == 2
    assert "participants.csv:2:1: email: not a valid email address" in result.err


def test_good_files_import(project: Project, cli: Cli) -> None:
    """Good files import with a one-line summary each; a same-country pair is only a warning."""
    setup(project, cli)
    newcomers = person() + person("amy@example.org", "Amy Ngata")
    pairs = f"{ROUND},ann@example.org,bob@example.org\n{ROUND},zoe@example.org,amy@example.org\n"
    runs = [
        command(project, "participants", {"participants.csv": PEOPLE + newcomers}),
        command(
            project,
            "coordinators",
            {"coordinators.csv": COORDINATORS + "ruth@example.org,Ruth,program,,\n"},
        ),
        command(project, "partnerships", {"partnerships.csv": PAIRS + pairs}),
        command(project, "topics", {"01-intro.md": topic(), "01-intro.fr.md": translation()}),
    ]
    results = [cli("--config", project.config, *args) for args in runs]
    assert [(r.code, r.out) for r in results] == [
        (0, "participants: 2 created, 0 updated, 6 unchanged\n"),
        (0, "coordinators: 1 created, 0 updated, 0 unchanged\n"),
        (0, "partnerships: 2 created, 0 updated, 0 unchanged; 1 warning\n"),
        (0, "topics: 1 created, 0 updated, 0 unchanged\n"),
    ]
    assert [r.err for r in results] == [
        "",
        "",
        f"warning: {project.dir / 'in' / 'partnerships.csv'}:3: all members are from NZ;"
        " the program matches across borders\n",
        "",
    ]


def test_example_program_imports(project: Project, cli: Cli) -> None:
    """The files in examples/ import through the CLI, and a second import changes nothing."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    runs = [
        ("import", "participants", examples / "participants.csv"),
        ("import", "coordinators", examples / "coordinators.csv"),
        ("round", "create", ROUND, "--start", "2027-03-01"),
        ("import", "partnerships", examples / "partnerships.csv"),
        ("import", "topics", examples / "topics", "--round", ROUND),
    ]
    for args in runs:
        result = cli("--config", project.config, *args)
        assert (result.code, result.err) == (0, ""), result.err
    before = project.dump()
    for args in runs[:2] + runs[3:]:
        result = cli("--config", project.config, *args)
        assert result.code == 0 and "0 created, 0 updated" in result.out, result.out
    assert project.dump() == before
