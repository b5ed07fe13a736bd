"""Tests for monitor/report.py and the report templates: scope, order, changes, grid, rendering."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, update

from mailer.compose import Composer
from mailer.notice import Notice, compose_notice
from monitor.report import UnknownCoordinator, build, recipients
from program.models import (
    ACTIVITY,
    COORDINATORS,
    MEMBERSHIPS,
    NOTES,
    OUTBOX,
    PARTICIPANTS,
    SNAPSHOTS,
)
from program.store import make_engine
from tests.conftest import Project, Result

NOW = datetime(2027, 4, 26, 10, 0, tzinfo=UTC)  # a Monday, eight weeks into the round
TODAY = NOW.date()
LAST_WEEK = TODAY - timedelta(days=7)

PEOPLE = """email,name,country,timezone,language
maria@example.org,Maria Kowalska,PL,Europe/Warsaw,pl
ana@example.org,Ana López,ES,Europe/Madrid,es
kelsey@example.org,Kelsey Brown,US,America/Chicago,en
li@example.cn,Li Wei,CN,Asia/Shanghai,zh
jan@example.org,Jan Nowak,PL,Europe/Warsaw,pl
sam@example.org,Sam Smith,US,America/New_York,en
chloe@example.org,Chloé Martin,FR,Europe/Paris,fr
bob@example.org,Bob Jones,GB,Europe/London,en
pedro@example.org,Pedro Alves,BR,America/Sao_Paulo,pt
olga@example.org,Olga Ivanova,UA,Europe/Kyiv,uk
aiko@example.org,Aiko Sato,JP,Asia/Tokyo,ja
ravi@example.org,Ravi Kumar,IN,Asia/Kolkata,en
eva@example.org,Eva Novak,CZ,Europe/Prague,cs
tom@example.org,Tom Berg,SE,Europe/Stockholm,sv
"""
COORDINATOR_CSV = """email,name,role,countries,timezone
pat@example.org,Pat Program,program,,Europe/London
piotr@example.org,Piotr Zieliński,country,PL,Europe/Warsaw
quinn@example.org,Quinn Lee,country,JP IN BR UA,Asia/Tokyo
"""
PAIRS = [
    ("maria", "ana"),  # 1: at risk, mail to Ana bounces; healthy last week
    ("kelsey", "li"),  # 2: one-sided, Li silent; judged for the first time this week
    ("jan", "sam"),  # 3: at risk two weeks running, nudged without an answer, a note
    ("chloe", "bob"),  # 4: healthy again after being at risk
    ("pedro", "olga"),  # 5: quiet
    ("aiko", "ravi"),  # 6: healthy; a snapshot after now must be ignored
    ("eva", "tom"),  # 7: at risk after a concern; one-sided last week
]
EMAIL = {line.split(",")[0].split("@")[0]: line.split(",")[0] for line in PEOPLE.splitlines()[1:]}


@dataclass
class Network:
    """The test network: its database and the ids the rows got."""

    connection: Connection
    people: dict[str, int] = field(default_factory=dict)  # first name -> participant id
    pairs: list[int] = field(default_factory=list)  # partnership ids, in PAIRS order
    coordinators: dict[str, int] = field(default_factory=dict)  # first name -> coordinator id

    def pid(self, n: int) -> int:
        """The id of pair ``n`` (1-based, as numbered in PAIRS)."""
        return self.pairs[n - 1]


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


@pytest.fixture
def network(project: Project, cli: Callable[..., Result]) -> Iterator[Network]:
    """Fourteen participants in seven pairs of one round, three coordinators, and their history."""
    (project.dir / "people.csv").write_text(PEOPLE, encoding="utf-8")
    (project.dir / "coordinators.csv").write_text(COORDINATOR_CSV, encoding="utf-8")
    pairs = "round,member_a,member_b\n" + "".join(
        f"spring,{EMAIL[a]},{EMAIL[b]}\n" for a, b in PAIRS
    )
    (project.dir / "pairs.csv").write_text(pairs, encoding="utf-8")
    for args in (
        ("import", "participants", project.dir / "people.csv"),
        ("import", "coordinators", project.dir / "coordinators.csv"),
        ("round", "create", "spring", "--start", "2027-03-01"),
        ("import", "partnerships", project.dir / "pairs.csv"),
    ):
        result = cli("--config", project.config, *args, "--now", "2027-02-20T09:00:00Z")
        assert result.code == 0, result.err
    engine = make_engine(f"sqlite:///{project.db}")
    with engine.begin() as connection:
        net = Network(connection)
        for row in connection.execute(select(PARTICIPANTS.c.id, PARTICIPANTS.c.email)):
            net.people[row.email.split("@")[0]] = row.id
        for row in connection.execute(select(COORDINATORS.c.id, COORDINATORS.c.email)):
            net.coordinators[row.email.split("@")[0]] = row.id
        first = {
            row.participant_id: row.partnership_id
            for row in connection.execute(
                select(MEMBERSHIPS.c.participant_id, MEMBERSHIPS.c.partnership_id)
            )
        }
        net.pairs = [first[net.people[a]] for a, _ in PAIRS]
        _history(net)
        yield net
    engine.dispose()


def _history(net: Network) -> None:
    """Snapshots for this week and last, activity, nudges and notes."""
    p, c = net.people, net.connection

    def snap(n: int, day: date, state: str, score: int, since: str, **facts: Any) -> None:
        c.execute(
            insert(SNAPSHOTS).values(
                partnership_id=net.pid(n),
                day=day,
                state=state,
                score=score,
                since=at(since),
                reasons=json.dumps(facts.pop("reasons", [f"Reason for pair {n}"])),
                facts=json.dumps({"last_contact": None, "silent": [], "urgent": [], **facts}),
                created_at=at(day.isoformat()),
            )
        )

    snap(
        1,
        TODAY,
        "at_risk",
        90,
        "2027-04-20",
        urgent=["bouncing"],
        reasons=["Mail to Ana López (ES) bounces since 20 April"],
    )
    snap(1, LAST_WEEK, "healthy", 5, "2027-03-05")
    snap(
        2,
        TODAY,
        "one_sided",
        40,
        "2027-04-12",
        silent=[p["li"]],
        reasons=["No word from Li Wei (CN) since 29 March"],
    )
    snap(3, TODAY, "at_risk", 60, "2027-04-07", last_contact="2027-03-10T12:00:00+00:00")
    snap(3, LAST_WEEK - timedelta(days=1), "at_risk", 55, "2027-04-07")  # latest before
    snap(4, TODAY, "healthy", 3, "2027-04-22")
    snap(4, LAST_WEEK, "at_risk", 52, "2027-04-01")
    snap(5, TODAY - timedelta(days=1), "quiet", 30, "2027-04-10")  # yesterday's is this week's
    snap(5, LAST_WEEK, "quiet", 28, "2027-04-10")
    snap(6, TODAY, "healthy", 4, "2027-04-20")
    snap(6, LAST_WEEK, "healthy", 4, "2027-04-12")
    snap(6, TODAY + timedelta(days=1), "at_risk", 99, "2027-04-27")  # the future: ignored
    snap(7, TODAY, "at_risk", 80, "2027-04-21", urgent=["concern"])
    snap(7, LAST_WEEK, "one_sided", 35, "2027-04-05")

    def event(n: int, who: str, kind: str, when: str, value: int | None = None) -> None:
        c.execute(
            insert(ACTIVITY).values(
                partnership_id=net.pid(n),
                participant_id=p[who],
                kind=kind,
                value=value,
                detail="",
                occurred_at=at(when),
                created_at=at(when),
            )
        )

    # Pair 1, by fortnight from 1 March: contact, one side, nothing, a bounce, nothing (the
    # partner contact is after now).
    event(1, "maria", "checkin", "2027-03-03", 1)
    event(1, "ana", "message", "2027-03-20")
    event(1, "ana", "bounce", "2027-04-20")
    event(1, "maria", "partner_contact", "2027-04-27")
    event(7, "tom", "concern", "2027-04-21")
    c.execute(
        update(PARTICIPANTS)
        .where(PARTICIPANTS.c.id == p["ana"])
        .values(bouncing_since=at("2027-04-20"))
    )

    def nudge(n: int, who: str, level: str, sent: str | None, prefix: str = "") -> None:
        c.execute(
            insert(OUTBOX).values(
                key=f"{prefix}nudge/{net.pid(n)}/{level}/start/{who}",
                kind="nudge",
                partnership_id=net.pid(n),
                participant_id=p[who],
                to_address=EMAIL[who],
                reply_key=f"rk{prefix[:2]}{net.pid(n)}{level}{who}",
                message_id=f"<{who}.{level}.{len(prefix)}@example.org>",
                status="sent" if sent else "pending",
                due_at=at(sent or "2027-04-26"),
                sent_at=at(sent) if sent else None,
                attempts=1 if sent else 0,
                created_at=at("2027-04-01"),
                updated_at=at("2027-04-01"),
            )
        )

    nudge(3, "jan", "pair", "2027-04-12")
    nudge(3, "sam", "silent", None)  # not sent yet: not shown
    nudge(3, "sam", "silent", "2027-04-13", prefix="rehearsal/")  # a rehearsal: not shown

    for text, when in (
        ("Called Jan: travelling until May.", "2027-04-20"),
        ("Written after now.", "2027-04-28"),
    ):
        c.execute(insert(NOTES).values(partnership_id=net.pid(3), text=text, created_at=at(when)))


def report(net: Network, who: str) -> dict[str, Any]:
    return build(net.connection, coordinator_id=net.coordinators[who], now=NOW)


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def test_program_coordinator_sees_every_troubled_partnership_by_score(network: Network) -> None:
    """A program coordinator gets cards for all at-risk and one-sided pairs, highest score first."""
    data = report(network, "pat")
    assert ids(data["partnerships"]) == [network.pid(n) for n in (1, 7, 3, 2)]
    assert [c["score"] for c in data["partnerships"]] == [90, 80, 60, 40]
    assert data["total"] == 7
    assert data["quiet"] == 1
    assert not data["all_clear"]
    assert data["week"] == "2027-W17"
    json.dumps(data)  # the payload must be JSON-safe


def test_country_coordinator_sees_partnerships_with_a_member_in_their_countries(
    network: Network,
) -> None:
    """Piotr (PL) sees the pairs with a Polish member, and counts only those."""
    data = report(network, "piotr")
    assert ids(data["partnerships"]) == [network.pid(1), network.pid(3)]
    assert data["total"] == 2
    assert {c["state"]: c["count"] for c in data["counts"]}["at_risk"] == 2
    assert data["coordinator"]["countries"] == ["PL"]


def test_counts_and_changes_since_last_week(network: Network) -> None:
    """Counts by state, last week's (latest on or before a week ago) and the difference."""
    counts = {
        c["state"]: (c["count"], c["previous"], c["change"])
        for c in report(network, "pat")["counts"]
    }
    assert counts["at_risk"] == (3, 2, 1)
    assert counts["one_sided"] == (1, 1, 0)
    assert counts["quiet"] == (1, 1, 0)
    assert counts["healthy"] == (2, 2, 0)
    assert counts["starting"] == (0, 0, 0)
    assert report(network, "pat")["new"] == 1  # pair 2 had no snapshot last week


def _move(net: Network, who: str, zone: str) -> None:
    """Put coordinator ``who`` in ``zone``."""
    net.connection.execute(
        update(COORDINATORS).where(COORDINATORS.c.id == net.coordinators[who]).values(timezone=zone)
    )


@pytest.mark.parametrize(
    ("zone", "now", "day", "week", "previous_day"),
    [
        # Monday 26 April 09:00 in Sydney (AEST) is Sunday 25 April 23:00 UTC.
        ("Australia/Sydney", "2027-04-25T23:00:00+00:00", "2027-04-26", "2027-W17", "2027-04-19"),
        # Monday 26 April 09:00 in Los Angeles (PDT) is 16:00 UTC the same day.
        (
            "America/Los_Angeles",
            "2027-04-26T16:00:00+00:00",
            "2027-04-26",
            "2027-W17",
            "2027-04-19",
        ),
        # Sunday 25 April 19:00 in Los Angeles is already Monday, UTC: still last week there.
        (
            "America/Los_Angeles",
            "2027-04-26T02:00:00+00:00",
            "2027-04-25",
            "2027-W16",
            "2027-04-18",
        ),
    ],
)
def test_the_reports_day_and_week_are_the_coordinators(
    network: Network, zone: str, now: str, day: str, week: str, previous_day: str
) -> None:
    """The report's date, ISO week and "since" date are the coordinator's local ones."""
    _move(network, "pat", zone)
    when = datetime.fromisoformat(now)
    data = build(network.connection, coordinator_id=network.coordinators["pat"], now=when)
    assert (data["day"], data["week"], data["previous_day"]) == (day, week, previous_day)
    assert data["now"] == when.isoformat()  # the instant stays UTC
    assert data["coordinator"]["timezone"] == zone


def test_a_report_built_on_sundays_utc_date_reads_that_days_snapshots(network: Network) -> None:
    """In Sydney on Monday morning "this week" is the newest snapshot, that of Sunday UTC."""
    _move(network, "pat", "Australia/Sydney")
    sunday = datetime(2027, 4, 25, 23, 0, tzinfo=UTC)
    data = build(network.connection, coordinator_id=network.coordinators["pat"], now=sunday)
    # Monday 26 April's snapshots (UTC) are not taken yet at that instant: each pair's latest
    # is from Sunday (pair 5) or last week, and last week's from 18 April (only pair 3's).
    assert (data["day"], data["week"]) == ("2027-04-26", "2027-W17")
    assert ids(data["partnerships"]) == [network.pid(n) for n in (3, 4, 7)]
    assert {c["state"]: c["count"] for c in data["counts"]}["quiet"] == 1
    assert data["total"] == 6 and data["new"] == 5


def test_changes_are_counted_since_the_previous_report(network: Network) -> None:
    """With ``last_report`` the changes count from that report's snapshot: a pair counted new
    by a report that caught up on Wednesday is not new again in Monday's."""
    pat = network.coordinators["pat"]
    wednesday = datetime(2027, 4, 21, 10, 0, tzinfo=UTC)
    network.connection.execute(
        insert(SNAPSHOTS).values(
            partnership_id=network.pid(2),
            day=wednesday.date(),
            state="one_sided",
            score=35,
            since=at("2027-04-12"),
            reasons="[]",
            facts="{}",
            created_at=wednesday,
        )
    )
    earlier = build(network.connection, coordinator_id=pat, now=wednesday)
    assert earlier["day"] == "2027-04-21"
    assert earlier["new"] == 7  # no snapshot before 18 April: all new to it, pair 2 included
    data = build(network.connection, coordinator_id=pat, now=NOW, last_report=wednesday)
    assert data["new"] == 0
    assert data["previous_day"] == "2027-04-21"
    one_sided = next(c for c in data["counts"] if c["state"] == "one_sided")
    assert (one_sided["count"], one_sided["previous"]) == (1, 2)  # pairs 2 and 7 on Wednesday
    # Without it (or with one not before now), a week before now.
    for last in (None, NOW, NOW + timedelta(days=1)):
        data = build(network.connection, coordinator_id=pat, now=NOW, last_report=last)
        assert data["new"] == 1 and data["previous_day"] == LAST_WEEK.isoformat()
    with pytest.raises(ValueError, match="zone-aware"):
        build(network.connection, coordinator_id=pat, now=NOW, last_report=datetime(2027, 4, 21))


def test_newly_at_risk_still_at_risk_and_recovered(network: Network) -> None:
    """The week's movements: into at_risk, staying there (with weeks), back to healthy."""
    data = report(network, "pat")
    assert ids(data["newly_at_risk"]) == [network.pid(1), network.pid(7)]
    assert ids(data["still_at_risk"]) == [network.pid(3)]
    assert data["still_at_risk"][0]["weeks"] == 2  # since 7 April
    assert ids(data["recovered"]) == [network.pid(4)]
    assert data["recovered"][0]["previous_state"] == "at_risk"
    assert [m["name"] for m in data["recovered"][0]["members"]] == ["Chloé Martin", "Bob Jones"]


def test_card_details_and_suggested_actions(network: Network) -> None:
    """Members in order, reasons, sent nudges only, notes up to now, and the next step."""
    cards = {c["id"]: c for c in report(network, "pat")["partnerships"]}
    one, two, three, seven = (cards[network.pid(n)] for n in (1, 2, 3, 7))
    assert [(m["name"], m["country"], m["timezone"]) for m in one["members"]] == [
        ("Maria Kowalska", "PL", "Europe/Warsaw"),
        ("Ana López", "ES", "Europe/Madrid"),
    ]
    assert one["reasons"] == ["Mail to Ana López (ES) bounces since 20 April"]
    assert one["days"] == 5  # 20 April noon to 26 April 10:00: five whole days
    assert three["nudges"] == [
        {
            "template": "nudge_pair",
            "to": {"name": "Jan Nowak", "email": "jan@example.org"},
            "sent": "2027-04-12",
            "sent_at": "2027-04-12T12:00:00+00:00",
        }
    ]
    assert three["notes"] == [{"text": "Called Jan: travelling until May.", "date": "2027-04-20"}]
    assert one["action"] == {"code": "fix_address", "names": ["Ana López"]}
    assert two["action"] == {"code": "write_silent", "names": ["Li Wei"]}
    assert [m["silent"] for m in two["members"]] == [False, True]
    assert three["action"] == {"code": "write_all", "names": ["Jan Nowak", "Sam Smith"]}
    assert seven["action"] == {"code": "contact_privately", "names": ["Tom Berg"]}


def test_activity_grid_by_fortnight(network: Network) -> None:
    """One cell per fortnight from the round's start up to now; later events do not count."""
    data = report(network, "pat")
    grid = {c["id"]: c["grid"] for c in data["partnerships"]}
    assert data["fortnights"] == 5
    assert [c["cell"] for c in grid[network.pid(1)]] == ["contact", "one", "none", "alert", "none"]
    assert [c["start"] for c in grid[network.pid(1)]][:2] == ["2027-03-01", "2027-03-15"]
    assert [c["cell"] for c in grid[network.pid(7)]] == ["none", "none", "none", "alert", "none"]


def test_an_all_clear_week(network: Network) -> None:
    """Quinn's countries have only a quiet and a healthy pair: no cards, one flag, a count."""
    data = report(network, "quinn")
    assert data["all_clear"] is True
    assert data["partnerships"] == [] and data["newly_at_risk"] == []
    assert data["quiet"] == 1 and data["total"] == 2


def test_recipients_and_unknown_coordinator(network: Network) -> None:
    """Every coordinator gets a report; asking for one who does not exist is an error."""
    assert [(r.name, r.role, r.countries) for r in recipients(network.connection)] == [
        ("Pat Program", "program", ()),
        ("Piotr Zieliński", "country", ("PL",)),
        ("Quinn Lee", "country", ("BR", "IN", "JP", "UA")),
    ]
    with pytest.raises(UnknownCoordinator, match="#999"):
        build(network.connection, coordinator_id=999, now=NOW)


# Rendering ------------------------------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def find(self, tag: str, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and (
                    cls is None or cls in child.attrs.get("class", "").split()
                ):
                    found.append(child)
                found += child.find(tag, cls)
        return found

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class TreeBuilder(HTMLParser):
    """A minimal DOM from the standard library's parser; fails on unbalanced tags."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def render(data: dict[str, Any], who: str, language: str = "en") -> tuple[str, Node, str]:
    """The report as a mail client sees it: subject, the HTML part's tree, the text part."""
    notice = Notice(
        template="report",
        language=language,
        default_language="en",
        program_name="Test Network",
        from_address="coordinators@example.org",
        recipient_name=data["coordinator"]["name"],
        recipient_email=data["coordinator"]["email"],
        idempotency_key=f"report/{data['coordinator']['id']}/{data['week']}",
        message_id=f"<report.{who}@example.org>",
        reply_address="coordinators@example.org",
        data=json.loads(json.dumps(data)),  # as the outbox row hands it back
    )
    wire = compose_notice(Composer(), notice, now=NOW).as_bytes()
    message = BytesParser(policy=policy.default).parsebytes(wire)  # as a mail client reads it
    assert message["Content-Language"] == language
    text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, html = text_part.get_content(), html_part.get_content()
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root]
    return str(message["Subject"]), builder.root, text


@pytest.mark.parametrize("who", ["pat", "piotr"])
def test_html_report_structure(network: Network, who: str) -> None:
    """The HTML part: a card per listed partnership in order, a grid row each, coloured cells."""
    data = report(network, who)
    listed = data["partnerships"]
    _, root, _ = render(data, who)
    cards = root.find("table", "report-card")
    assert len(cards) == len(listed)
    for card, p in zip(cards, listed, strict=True):
        assert card.text().strip().startswith(f"#{p['id']}")
        for m in p["members"]:
            assert m["name"] in card.text()
    (grid,) = root.find("table", "report-grid")
    rows = grid.find("tr")
    assert len(rows) == 1 + len(listed)
    assert len(rows[0].find("th")) == 1 + data["fortnights"]
    symbols = {"contact": "✓", "one": "½", "none": "·", "alert": "!"}
    for row, p in zip(rows[1:], listed, strict=True):
        cells = row.find("td")
        assert len(cells) == 1 + data["fortnights"]
        colours = set()
        for cell, expected in zip(cells[1:], p["grid"], strict=True):
            colour = cell.attrs["bgcolor"]
            assert colour.startswith("#")
            assert f"background-color:{colour}" in cell.attrs["style"]
            assert cell.text().strip() == symbols[expected["cell"]]
            colours.add((expected["cell"], colour))
        assert len({cell for cell, _ in colours}) == len(colours)  # one colour per kind
    (legend,) = root.find("table", "report-legend")
    assert len([td for td in legend.find("td") if "bgcolor" in td.attrs]) == 4
    assert not root.find("p", "report-all-clear")


@pytest.mark.parametrize("who", ["pat", "piotr"])
def test_text_report_reads_on_its_own(network: Network, who: str) -> None:
    """The plain-text part names the people, gives the reasons and draws the grid in symbols."""
    data = report(network, who)
    subject, _, text = render(data, who)
    expected = "2 at risk, 0 one-sided" if who == "piotr" else "3 at risk, 1 one-sided"
    assert subject.endswith(f"weekly report 2027-W17 — {expected}")
    assert "AT A GLANCE" in text and "NEEDS ATTENTION" in text
    for p in data["partnerships"]:
        for m in p["members"]:
            assert m["name"] in text
        for reason in p["reasons"]:
            assert reason in text
        row = f"#{p['id']}".ljust(8) + "".join(
            "  " + {"contact": "✓", "one": "½", "none": "·", "alert": "!"}[c["cell"]]
            for c in p["grid"]
        )
        assert row in text
    assert "ACTIVITY BY FORTNIGHT" in text
    assert "<" not in text  # no markup leaked into the plain text
    if who == "piotr":
        assert "Poland" in text
        assert "Kelsey" not in text
    else:
        assert "Contact Tom Berg privately" in text
        assert "RECOVERED" in text and "Chloé Martin" in text


def test_all_clear_report_says_so_in_one_line(network: Network) -> None:
    """An all-clear week renders one line instead of cards and grid, in both parts."""
    data = report(network, "quinn")
    subject, root, text = render(data, "quinn")
    assert "all clear" in subject
    assert len(root.find("p", "report-all-clear")) == 1
    assert not root.find("table", "report-card") and not root.find("table", "report-grid")
    assert "All clear: no partnership is at risk or one-sided this week." in text
    assert "ACTIVITY BY FORTNIGHT" not in text


@pytest.mark.parametrize("language", ["en", "fr", "es"])
@pytest.mark.parametrize("who", ["pat", "piotr", "quinn"])
def test_report_renders_in_every_language(network: Network, who: str, language: str) -> None:
    """Each language's templates render the same structure: cards, a grid row each, a legend."""
    data = report(network, who)
    subject, root, text = render(data, who, language)
    listed = len(data["partnerships"])
    assert data["week"] in subject
    assert len(root.find("table", "report-card")) == listed
    assert len(root.find("p", "report-all-clear")) == (1 if data["all_clear"] else 0)
    if listed:
        (grid,) = root.find("table", "report-grid")
        assert len(grid.find("tr")) == 1 + listed
        assert all("bgcolor" in td.attrs for tr in grid.find("tr")[1:] for td in tr.find("td")[1:])
    for p in data["partnerships"]:
        assert all(m["name"] in text for m in p["members"])
    assert "<" not in text


# A large network: the cards and the week's movements are capped ------------------------------


@pytest.fixture
def crowd(project: Project, cli: Callable[..., Result]) -> Iterator[Network]:
    """150 pairs, all at risk this week (scores falling in pair order, three pairs a score); the
    first 60 were at risk last week too, the other 90 healthy."""
    people = "email,name,country,timezone,language\n" + "".join(
        f"m{i}@example.org,Member{i} Test,PL,Europe/Warsaw,en\n" for i in range(300)
    )
    pairs = "round,member_a,member_b\n" + "".join(
        f"spring,m{2 * i}@example.org,m{2 * i + 1}@example.org\n" for i in range(150)
    )
    (project.dir / "people.csv").write_text(people, encoding="utf-8")
    (project.dir / "coordinators.csv").write_text(COORDINATOR_CSV, encoding="utf-8")
    (project.dir / "pairs.csv").write_text(pairs, encoding="utf-8")
    for args in (
        ("import", "participants", project.dir / "people.csv"),
        ("import", "coordinators", project.dir / "coordinators.csv"),
        ("round", "create", "spring", "--start", "2027-03-01"),
        ("import", "partnerships", project.dir / "pairs.csv"),
    ):
        result = cli("--config", project.config, *args, "--now", "2027-02-20T09:00:00Z")
        assert result.code == 0, result.err
    engine = make_engine(project.url)
    with engine.begin() as connection:
        net = Network(connection)
        for row in connection.execute(select(COORDINATORS.c.id, COORDINATORS.c.email)):
            net.coordinators[row.email.split("@")[0]] = row.id
        first = {
            row.participant_id: row.partnership_id
            for row in connection.execute(
                select(MEMBERSHIPS.c.participant_id, MEMBERSHIPS.c.partnership_id)
            )
        }
        ids = {row.email: row.id for row in connection.execute(select(PARTICIPANTS))}
        net.pairs = [first[ids[f"m{2 * i}@example.org"]] for i in range(150)]
        rows = []
        for n, pid in enumerate(net.pairs):
            rows.append(_snapshot_row(pid, TODAY, "at_risk", 50 + (149 - n) // 3))
            rows.append(_snapshot_row(pid, LAST_WEEK, "at_risk" if n < 60 else "healthy", 50))
        connection.execute(insert(SNAPSHOTS), rows)
        yield net
    engine.dispose()


def _snapshot_row(pid: int, day: date, state: str, score: int) -> dict[str, Any]:
    return {
        "partnership_id": pid,
        "day": day,
        "state": state,
        "score": score,
        "since": at("2027-04-01"),
        "reasons": json.dumps([f"Reason for #{pid}"]),
        "facts": json.dumps({"last_contact": None, "silent": [], "urgent": []}),
        "created_at": at(day.isoformat()),
    }


def test_cards_are_capped_at_max_listed_by_score(crowd: Network) -> None:
    """150 at risk: the 100 highest scores get a card, in order; the other 50 are counted."""
    data = report(crowd, "pat")
    assert ids(data["partnerships"]) == [crowd.pid(n) for n in range(1, 101)]
    assert data["more"] == 50 and data["more_states"] == ["at_risk"]
    assert {c["state"]: c["count"] for c in data["counts"]}["at_risk"] == 150
    assert not data["all_clear"]
    assert data["fortnights"] == 5
    smaller = build(
        crowd.connection, coordinator_id=crowd.coordinators["pat"], now=NOW, max_listed=10
    )
    assert len(smaller["partnerships"]) == 10 and smaller["more"] == 140


def test_the_weeks_movements_are_capped_with_a_count_of_the_rest(crowd: Network) -> None:
    """90 newly at risk and 60 still at risk: 50 of each are named, the rest counted."""
    data = report(crowd, "pat")
    assert ids(data["newly_at_risk"]) == [crowd.pid(n) for n in range(61, 111)]
    assert data["newly_at_risk_more"] == 40
    assert ids(data["still_at_risk"]) == [crowd.pid(n) for n in range(1, 51)]
    assert data["still_at_risk_more"] == 10
    assert data["recovered"] == [] and data["recovered_more"] == 0
    assert all(m["name"].startswith("Member") for p in data["newly_at_risk"] for m in p["members"])


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_capped_report_says_how_many_more_and_how_to_list_them(
    crowd: Network, language: str
) -> None:
    """Both parts: 100 cards and grid rows, then one line with the 50 others and the command."""
    data = report(crowd, "pat")
    subject, root, text = render(data, "pat", language)
    assert len(root.find("table", "report-card")) == 100
    (grid,) = root.find("table", "report-grid")
    assert len(grid.find("tr")) == 101
    (more,) = root.find("p", "report-more")
    assert "50" in more.text() and "rapport health --state at_risk" in more.text()
    assert "--state one_sided" not in more.text()
    lines = [line for line in text.splitlines() if "rapport health --state at_risk" in line]
    assert len(lines) == 1 and "50" in lines[0]
    assert "150" in subject
    if language == "en":
        assert lines[0] == (
            "50 more partnerships at risk or one-sided not listed here."
            " To see them all: rapport health --state at_risk."
        )
        assert "  … and 40 more" in text and "  … and 10 more" in text
        assert "150 at risk, 0 one-sided" in subject
        assert "<li>… and 40 more</li>" not in text
        assert [li.text() for li in root.find("li") if "more" in li.text()] == [
            "… and 40 more",
            "… and 10 more",
        ]
