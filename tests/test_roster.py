"""Tests for program.roster, csvinput and topics: CSV and topic imports, rounds, re-imports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from program import csvinput, roster
from program.errors import InputError, NotFound, UsageError
from program.models import (
    Coordinator,
    Membership,
    Participant,
    Partnership,
    Round,
    Topic,
    TopicText,
)
from tests.conftest import Project

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=3)
HEADER = "email,name,country,timezone,language\n"
PEOPLE = (
    HEADER + "ann@example.org,Ann Dupont,FR,Europe/Paris,fr\n"
    "bob@example.org,Bob Tane,NZ,Pacific/Auckland,en\n"
    "chiara@example.org,Chiara Rossi,IT,Europe/Rome,en\n"
    "dev@example.org,Dev Patel,IN,Asia/Kolkata,en\n"
    "emma@example.org,Emma Martin,FR,Europe/Paris,fr\n"
)


pytestmark = pytest.mark.databases("sqlite", "postgresql")


@pytest.fixture
def session(project: Project) -> Iterator[Session]:
    """A session on the project's freshly migrated database (each backend in turn)."""
    with Session(project.engine, expire_on_commit=False) as s:
        yield s


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def people(session: Session) -> dict[str, Participant]:
    return {p.email: p for p in session.exec(select(Participant))}


def spring(session: Session) -> Round:
    return roster.create_round(
        "2027-spring", session=session, now=NOW, start=date(2027, 3, 1), end=None
    )


def load_examples(session: Session) -> list[roster.ImportReport]:
    reports = [
        roster.import_participants(EXAMPLES / "participants.csv", session=session, now=NOW),
        roster.import_coordinators(
            EXAMPLES / "coordinators.csv", session=session, now=NOW, default_timezone="UTC"
        ),
    ]
    spring(session)
    reports.append(
        roster.import_partnerships(EXAMPLES / "partnerships.csv", session=session, now=NOW)
    )
    reports.append(
        roster.import_topics(
            EXAMPLES / "topics",
            session=session,
            now=NOW,
            round_name="2027-spring",
            default_language="en",
        )
    )
    return reports


def test_example_data_imports_cleanly(session: Session) -> None:
    """The example program imports without problems: 41 people, 20 cross-border partnerships."""
    reports = load_examples(session)
    assert [r.summary() for r in reports] == [
        "participants: 41 created, 0 updated, 0 unchanged",
        "coordinators: 2 created, 0 updated, 0 unchanged",
        "partnerships: 20 created, 0 updated, 0 unchanged",
        "topics: 8 created, 0 updated, 0 unchanged",
    ]
    everyone = {p.id: p for p in session.exec(select(Participant))}
    assert len({p.country for p in everyone.values()}) >= 20
    groups: dict[int, list[Participant]] = {}
    for m in session.exec(select(Membership).order_by(col(Membership.position))):
        groups.setdefault(m.partnership_id, []).append(everyone[m.participant_id])
    assert sorted(len(g) for g in groups.values()) == [2] * 19 + [3]
    assert all(len({p.country for p in g}) == len(g) for g in groups.values())
    texts = session.exec(select(TopicText)).all()
    assert sorted({t.language for t in texts}) == ["en", "es", "fr"] and len(texts) == 24


def test_example_data_reimports_unchanged(session: Session) -> None:
    """Importing the example files a second time changes nothing and says so."""
    load_examples(session)
    again = [
        roster.import_participants(EXAMPLES / "participants.csv", session=session, now=LATER),
        roster.import_coordinators(
            EXAMPLES / "coordinators.csv", session=session, now=LATER, default_timezone="UTC"
        ),
        roster.import_partnerships(EXAMPLES / "partnerships.csv", session=session, now=LATER),
        roster.import_topics(
            EXAMPLES / "topics",
            session=session,
            now=LATER,
            round_name="2027-spring",
            default_language="en",
        ),
    ]
    assert [(r.created, r.updated, r.warnings) for r in again] == [(0, 0, [])] * 4
    assert [r.unchanged for r in again] == [41, 2, 20, 8]
    assert all(p.updated_at == NOW for p in session.exec(select(Participant)))


def test_participants_are_normalized(session: Session, tmp_path: Path) -> None:
    """Emails are lower-cased, codes and zones canonical, a BOM and CRLF line ends accepted."""
    text = (
        "\ufeff Email , NAME,country,timezone,language,interests\r\n"
        '  Zoe.Whitfield@Example.NET ,  Zoë Whitfield ,nz,pacific/auckland,pt_br,"maps, zines"\r\n'
    )
    report = roster.import_participants(write(tmp_path, "p.csv", text), session=session, now=NOW)
    assert report.summary() == "participants: 1 created, 0 updated, 0 unchanged"
    zoe = people(session)["zoe.whitfield@example.net"]
    assert (zoe.name, zoe.country, zoe.timezone, zoe.language) == (
        "Zoë Whitfield",
        "NZ",
        "Pacific/Auckland",
        "pt-BR",
    )
    assert (zoe.interests, zoe.career_stage, zoe.status) == ("maps, zines", "", "active")


def test_changed_rows_are_updated(session: Session, tmp_path: Path) -> None:
    """A re-import with a new name, zone and language updates those rows and leaves the rest."""
    roster.import_participants(write(tmp_path, "p.csv", PEOPLE), session=session, now=NOW)
    changed = PEOPLE.replace("Bob Tane,NZ,Pacific/Auckland,en", "Robert Tane,NZ,Pacific/Chatham,fr")
    report = roster.import_participants(
        write(tmp_path, "p.csv", changed), session=session, now=LATER
    )
    assert (report.created, report.updated, report.unchanged) == (0, 1, 4)
    session.expire_all()
    bob = people(session)["bob@example.org"]
    assert (bob.name, bob.timezone, bob.language) == ("Robert Tane", "Pacific/Chatham", "fr")
    assert (bob.created_at, bob.updated_at) == (NOW, LATER)
    assert people(session)["ann@example.org"].updated_at == NOW


def test_absent_optional_column_keeps_stored_values(session: Session, tmp_path: Path) -> None:
    """A file without the interests column leaves the interests already stored alone."""
    with_interests = "email,name,country,timezone,language,interests\n" + (
        "ann@example.org,Ann Dupont,FR,Europe/Paris,fr,rare books\n"
    )
    roster.import_participants(write(tmp_path, "a.csv", with_interests), session=session, now=NOW)
    report = roster.import_participants(
        write(tmp_path, "b.csv", PEOPLE), session=session, now=LATER
    )
    assert (report.created, report.updated, report.unchanged) == (4, 0, 1)
    assert people(session)["ann@example.org"].interests == "rare books"


def test_every_problem_is_reported_and_nothing_written(session: Session, tmp_path: Path) -> None:
    """A file with several bad rows yields all their problems, in file order, and no rows."""
    text = (
        HEADER + "ann@example.org,Ann,FR,Europe/Paris,fr\n"
        "bad-address,Bob,NZ,Pacific/Auckland,en\n"
        "\n"
        "cara@example.org,,XZ,Mars/Olympus,klingon\n"
        "ANN@example.org,Ann again,FR,Europe/Paris,fr\n"
        'dan@example.org,"Dan\nSmith",IN,Asia/Kolkata,en\n'
    )
    with pytest.raises(InputError) as caught:
        roster.import_participants(write(tmp_path, "people.csv", text), session=session, now=NOW)
    where = [(p.line, p.column, p.field) for p in caught.value.problems]
    assert where == [
        (3, 1, "email"),
        (5, 2, "name"),
        (5, 3, "country"),
        (5, 4, "timezone"),
        (5, 5, "language"),
        (6, 1, "email"),
        (7, 2, "name"),
    ]
    assert "ann@example.org is already on line 2" in str(caught.value)
    assert people(session) == {}


def test_non_utf8_names_the_line(session: Session, tmp_path: Path) -> None:
    """A Latin-1 file is refused with the line of each bad byte."""
    data = HEADER + "ann@example.org,Ann,FR,Europe/Paris,fr\nzoe@example.org,Zoë,NZ,UTC,en\n"
    path = write(tmp_path, "p.csv", data.encode("latin-1"))
    with pytest.raises(InputError) as caught:
        roster.import_participants(path, session=session, now=NOW)
    [problem] = caught.value.problems
    assert (problem.line, problem.message[:9]) == (3, "not UTF-8")


def test_coordinators(session: Session, tmp_path: Path) -> None:
    """Program and country coordinators import; an empty zone means the program's zone."""
    text = (
        "email,name,role,countries,timezone\n"
        "ruth@example.org,Ruth Adebayo,program,,\n"
        "ines@example.org,Inés Carvajal,Country,es mx  AR,Europe/Madrid\n"
    )
    report = roster.import_coordinators(
        write(tmp_path, "c.csv", text),
        session=session,
        now=NOW,
        default_timezone="Australia/Sydney",
    )
    assert report.summary() == "coordinators: 2 created, 0 updated, 0 unchanged"
    found = {c.email: (c.role, c.countries, c.timezone) for c in session.exec(select(Coordinator))}
    assert found == {
        "ruth@example.org": ("program", "", "Australia/Sydney"),
        "ines@example.org": ("country", "ES MX AR", "Europe/Madrid"),
    }


def test_program_coordinator_countries_warn(session: Session, tmp_path: Path) -> None:
    """Countries given for a program coordinator are ignored with a warning."""
    text = "email,name,role,countries\nruth@example.org,Ruth,program,AU NZ\n"
    report = roster.import_coordinators(
        write(tmp_path, "c.csv", text), session=session, now=NOW, default_timezone="UTC"
    )
    assert [str(w).split("c.csv")[1] for w in report.warnings] == [
        ":2:4: countries: a program coordinator sees every country; ignored"
    ]
    assert session.exec(select(Coordinator.countries)).one() == ""


def test_triad_and_reimport(session: Session, tmp_path: Path) -> None:
    """A triad keeps its members' positions; the same file again is unchanged."""
    roster.import_participants(write(tmp_path, "p.csv", PEOPLE), session=session, now=NOW)
    spring(session)
    text = (
        "round,member_a,member_b,member_c\n"
        "2027-spring,ann@example.org,bob@example.org,dev@example.org\n"
        "2027-spring,chiara@example.org,emma@example.org,\n"
    )
    path = write(tmp_path, "pairs.csv", text)
    first = roster.import_partnerships(path, session=session, now=NOW)
    assert (first.created, first.warnings) == (2, [])
    ids = {p.id: p.email for p in session.exec(select(Participant))}
    members = session.exec(select(Membership).order_by(col(Membership.id))).all()
    assert [(ids[m.participant_id], m.position) for m in members] == [
        ("ann@example.org", 0),
        ("bob@example.org", 1),
        ("dev@example.org", 2),
        ("chiara@example.org", 0),
        ("emma@example.org", 1),
    ]
    # The same members in another order are the same partnership.
    reordered = text.replace(
        "ann@example.org,bob@example.org,dev@example.org",
        "dev@example.org,ann@example.org,bob@example.org",
    )
    again = roster.import_partnerships(
        write(tmp_path, "pairs.csv", reordered), session=session, now=LATER
    )
    assert (again.created, again.unchanged) == (0, 2)
    assert len(session.exec(select(Partnership)).all()) == 2


def test_same_country_pair_is_a_warning(session: Session, tmp_path: Path) -> None:
    """A pair from one country imports, with a warning naming the line and the country."""
    roster.import_participants(write(tmp_path, "p.csv", PEOPLE), session=session, now=NOW)
    spring(session)
    text = "round,member_a,member_b\n2027-spring,ann@example.org,emma@example.org\n"
    report = roster.import_partnerships(
        write(tmp_path, "pairs.csv", text), session=session, now=NOW
    )
    assert report.created == 1
    assert [(w.line, w.message) for w in report.warnings] == [
        (2, "all members are from FR; the program matches across borders")
    ]
    assert report.summary() == "partnerships: 1 created, 0 updated, 0 unchanged; 1 warning"


def test_partnership_conflicts(session: Session, tmp_path: Path) -> None:
    """A participant already partnered (in the file or the database) is refused, all at once."""
    roster.import_participants(write(tmp_path, "p.csv", PEOPLE), session=session, now=NOW)
    spring(session)
    first = "round,member_a,member_b\n2027-spring,ann@example.org,bob@example.org\n"
    roster.import_partnerships(write(tmp_path, "a.csv", first), session=session, now=NOW)
    text = (
        "round,member_a,member_b\n"
        "2027-spring,chiara@example.org,dev@example.org\n"
        "2027-spring,dev@example.org,emma@example.org\n"
        "2027-spring,bob@example.org,emma@example.org\n"
        "2027-spring,chiara@example.org,chiara@example.org\n"
        "2027-autumn,ann@example.org,nobody@example.org\n"
    )
    with pytest.raises(InputError) as caught:
        roster.import_partnerships(write(tmp_path, "b.csv", text), session=session, now=NOW)
    messages = [str(p).split("b.csv")[1] for p in caught.value.problems]
    assert messages == [
        ":3:2: member_a: dev@example.org is already in the partnership on line 2 (2027-spring)",
        ":4:2: member_a: bob@example.org is already partnered with ann@example.org in 2027-spring",
        ":4:3: member_b: emma@example.org is already in the partnership on line 3 (2027-spring)",
        ":5:3: member_b: chiara@example.org is already a member of this partnership",
        ":6:1: round: no such round '2027-autumn' (create it with `rapport round create`)",
        ":6:3: member_b: no participant nobody@example.org (import participants first)",
    ]
    assert len(session.exec(select(Partnership)).all()) == 1


def test_dissolved_partnership_does_not_block_a_new_one(session: Session, tmp_path: Path) -> None:
    """Only active partnerships count as "already partnered"; a dissolved one is not re-created."""
    roster.import_participants(write(tmp_path, "p.csv", PEOPLE), session=session, now=NOW)
    spring(session)
    first = "round,member_a,member_b\n2027-spring,ann@example.org,bob@example.org\n"
    roster.import_partnerships(write(tmp_path, "a.csv", first), session=session, now=NOW)
    old = session.exec(select(Partnership)).one()
    old.status = "dissolved"
    session.add(old)
    session.flush()
    text = (
        "round,member_a,member_b\n"
        "2027-spring,ann@example.org,bob@example.org\n"
        "2027-spring,chiara@example.org,ann@example.org\n"
    )
    report = roster.import_partnerships(write(tmp_path, "b.csv", text), session=session, now=LATER)
    assert (report.created, report.unchanged) == (1, 1)
    assert [(w.line, w.message) for w in report.warnings] == [
        (2, "this partnership was dissolved in 2027-spring; not re-created")
    ]
    ids = {p.id: p.email for p in session.exec(select(Participant))}
    kept = session.exec(select(Membership).where(Membership.partnership_id == old.id)).all()
    assert len(kept) == 2  # the dissolved partnership keeps its members, as history
    active = session.exec(select(Partnership).where(Partnership.status == "active")).one()
    members = session.exec(select(Membership).where(Membership.partnership_id == active.id))
    assert sorted(ids[m.participant_id] for m in members) == [
        "ann@example.org",
        "chiara@example.org",
    ]
    # Ann now has an active partnership again: another one in the same round is refused.
    clash = "round,member_a,member_b\n2027-spring,ann@example.org,dev@example.org\n"
    with pytest.raises(InputError, match=r"ann@example\.org is already partnered with chiara"):
        roster.import_partnerships(write(tmp_path, "c.csv", clash), session=session, now=LATER)


TOPIC = '+++\ntitle = "{title}"\norder = {order}\n+++\n\n{body}\n'


def test_topics_with_translations_and_updates(session: Session, tmp_path: Path) -> None:
    """Topics import with their translations; a changed title updates the topic in place."""
    spring(session)
    folder = tmp_path / "topics"
    write(folder, "intro.md", TOPIC.format(title="Hello", order=1, body="Say *hello*."))
    write(folder, "intro.fr.md", '+++\ntitle = "Bonjour"\n+++\nDites *bonjour*.\n')
    write(folder, "library.md", TOPIC.format(title="Your library", order=2, body="Tell us."))
    write(folder, "notes.txt", "not a topic")

    def run(now: datetime) -> roster.ImportReport:
        return roster.import_topics(
            folder, session=session, now=now, round_name="2027-spring", default_language="en"
        )

    assert run(NOW).summary() == "topics: 2 created, 0 updated, 0 unchanged"
    texts = {(t.language, t.title): t.body for t in session.exec(select(TopicText))}
    assert texts == {
        ("en", "Hello"): "Say *hello*.",
        ("fr", "Bonjour"): "Dites *bonjour*.",
        ("en", "Your library"): "Tell us.",
    }
    assert run(LATER).summary() == "topics: 0 created, 0 updated, 2 unchanged"
    write(folder, "intro.fr.md", '+++\ntitle = "Salut"\norder = 1\n+++\nDites *bonjour*.\n')
    assert run(LATER).summary() == "topics: 0 created, 1 updated, 1 unchanged"
    assert {t.title for t in session.exec(select(TopicText))} == {"Hello", "Salut", "Your library"}
    first = session.exec(select(Topic).where(Topic.seq == 1)).one()
    assert (first.source, first.updated_at) == ("intro.md", LATER)


def test_topic_problems_are_all_reported(session: Session, tmp_path: Path) -> None:
    """Front matter errors in several files are reported together, with file lines."""
    spring(session)
    folder = tmp_path / "topics"
    write(folder, "a.md", '+++\ntitle = "A"\norder = 1\ncolour = "red"\n+++\nText.\n')
    write(folder, "b.md", '+++\ntitle = "B"\norder = 1\n+++\nText.\n')
    write(folder, "c.md", '+++\ntitle = "C"\norder = \n+++\nText.\n')
    write(folder, "d.fr.md", '+++\ntitle = "D"\n+++\nTexte.\n')
    write(folder, "a.es.md", '+++\ntitle = "A"\nsend_on = 2027-03-02\n+++\nTexto.\n')
    with pytest.raises(InputError) as caught:
        roster.import_topics(
            folder, session=session, now=NOW, round_name="2027-spring", default_language="en"
        )
    found = sorted(str(p).replace(str(folder) + "/", "") for p in caught.value.problems)
    assert found == [
        "a.es.md:3: send_on: 2027-03-02 differs from the base file a.md (no send_on)",
        "a.md:4: colour: unknown key (known: title, order, send_on)",
        "b.md:3: order: order 1 is also a.md's",
        "c.md:3:9: front matter: Invalid value",
        "d.fr.md: a translation of d.md, which is not in this folder",
    ]
    assert session.exec(select(Topic)).all() == []


def test_topics_need_a_known_round(session: Session, tmp_path: Path) -> None:
    """Importing topics into a round that does not exist is refused."""
    write(tmp_path / "t", "a.md", TOPIC.format(title="A", order=1, body="x"))
    with pytest.raises(NotFound, match="round nope: no such round"):
        roster.import_topics(
            tmp_path / "t", session=session, now=NOW, round_name="nope", default_language="en"
        )


def test_topic_missing_from_folder_warns(session: Session, tmp_path: Path) -> None:
    """A topic in the database but no longer in the folder is kept, with a warning."""
    spring(session)
    folder = tmp_path / "topics"
    write(folder, "a.md", TOPIC.format(title="A", order=1, body="x"))
    write(folder, "b.md", TOPIC.format(title="B", order=2, body="y"))

    def run(now: datetime) -> roster.ImportReport:
        return roster.import_topics(
            folder, session=session, now=now, round_name="2027-spring", default_language="en"
        )

    run(NOW)
    (folder / "b.md").unlink()
    report = run(LATER)
    assert [w.message for w in report.warnings] == [
        "topic 2 (b.md) is in round 2027-spring but not in this folder; left as it is"
    ]
    assert len(session.exec(select(Topic)).all()) == 2


def test_create_and_list_rounds(session: Session) -> None:
    """Rounds are created with their dates and listed by start date."""
    roster.create_round(
        "2027-autumn",
        session=session,
        now=NOW,
        start=date(2027, 9, 1),
        end=date(2027, 12, 1),
        cadence_days=7,
    )
    spring(session)
    assert [(r.name, r.cadence_days, r.status) for r in roster.list_rounds(session=session)] == [
        ("2027-spring", 14, "active"),
        ("2027-autumn", 7, "active"),
    ]


def test_create_round_refusals(session: Session) -> None:
    """A bad name, an end before the start and a cadence out of range are reported together."""
    spring(session)
    with pytest.raises(UsageError) as caught:
        roster.create_round(
            "spring 2027",
            session=session,
            now=NOW,
            start=date(2027, 3, 1),
            end=date(2027, 3, 1),
            cadence_days=0,
        )
    assert str(caught.value).splitlines() == [
        "round 'spring 2027': a name may use only letters, digits, '.', '_' and '-' (at most 100)",
        "round spring 2027: the end (2027-03-01) must be after the start (2027-03-01)",
        "round spring 2027: the cadence must be 1 to 365 days, not 0",
    ]
    with pytest.raises(UsageError, match="round 2027-spring: already exists"):
        spring(session)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("en", "en"),
        ("FR", "fr"),
        ("pt_br", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("fil", "fil"),
    ],
)
def test_language_codes_accepted(given: str, stored: str) -> None:
    """Language tags are checked against ISO 639 and stored in their usual spelling."""
    assert csvinput.check_language(given) == stored


@pytest.mark.parametrize("given", ["english", "e", "qq", "en-XQ", "en--GB", "en-"])
def test_language_codes_refused(given: str) -> None:
    """Malformed tags and unknown languages or regions are refused."""
    with pytest.raises(csvinput.Invalid):
        csvinput.check_language(given)


def test_hundred_thousand_participants(session: Session, tmp_path: Path) -> None:
    """A 100,000-row file imports in seconds, and re-imports as all unchanged (timing printed)."""
    zones = [
        "Europe/Paris",
        "Asia/Kolkata",
        "America/Sao_Paulo",
        "Pacific/Auckland",
        "Africa/Nairobi",
    ]
    countries = ["FR", "IN", "BR", "NZ", "KE"]
    languages = ["en", "fr", "es"]
    rows = [
        f"person{i}@example.org,Person {i},{countries[i % 5]},{zones[i % 5]},{languages[i % 3]}\n"
        for i in range(100_000)
    ]
    path = write(tmp_path, "big.csv", HEADER + "".join(rows))
    started = time.perf_counter()
    report = roster.import_participants(path, session=session, now=NOW)
    session.commit()
    first = time.perf_counter() - started
    assert report.created == 100_000
    started = time.perf_counter()
    again = roster.import_participants(path, session=session, now=LATER)
    second = time.perf_counter() - started
    assert (again.unchanged, again.updated) == (100_000, 0)
    print(f"\n100,000 participants: import {first:.2f} s, unchanged re-import {second:.2f} s")


def test_kosovo_is_a_country(session: Session, tmp_path: Path) -> None:
    """XK, the code in general use for Kosovo, is accepted though ISO 3166-1 lacks it."""
    path = write(
        tmp_path, "xk.csv", HEADER + "vlora@example.org,Vlora Berisha,xk,Europe/Belgrade,en\n"
    )
    report = roster.import_participants(path, session=session, now=NOW)
    assert report.created == 1
    assert people(session)["vlora@example.org"].country == "XK"
