"""The program's people, pairs and rounds: CSV imports of participants, coordinators and
partnerships, and round creation.  Topic imports live in program/topics.py.

Every importer reads the whole file and checks every row before it writes anything; when it
finds a problem it raises :class:`InputError` listing every problem in the file (file, line,
column, field), so the caller, which owns the transaction, rolls back: an import is all or
nothing, and ``--dry-run`` is the same call rolled back.  Rows are matched by their natural key
(an email address; a partnership's round and members), so re-importing a file is safe and
reports what it created, updated and left unchanged.  An address that is now a participant's alias
(``rapport participant address`` keeps the old one as an alias) still names that participant.

Reading the files and checking their fields is program/csvinput.py's work, which also says how
lines and columns are counted.  ``now`` is an aware UTC datetime.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import insert, update
from sqlmodel import Session, SQLModel, col, select

from program.csvinput import (
    CsvFile,
    Invalid,
    Row,
    check_country,
    check_email,
    check_language,
    check_zone,
    text_up_to,
)
from program.errors import NotFound, Problem, UsageError
from program.models import Alias, Coordinator, Membership, Participant, Partnership, Round

__all__ = [
    "ImportReport",
    "create_round",
    "import_coordinators",
    "import_participants",
    "import_partnerships",
    "import_topics",
    "list_rounds",
]

ROUND_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass
class ImportReport:
    """What one import did (or, rolled back, would do): counts of rows and the warnings."""

    kind: str  # participants, coordinators, partnerships or topics
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    warnings: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``participants: 40 created, 0 updated, 2 unchanged; 1 warning``."""
        counts = f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        text = f"{self.kind}: {counts}"
        if self.warnings:
            text += f"; {len(self.warnings)} warning" + ("s" if len(self.warnings) != 1 else "")
        return text


# -- participants and coordinators -----------------------------------------------------------

_PARTICIPANT_FIELDS = (
    "name",
    "country",
    "timezone",
    "language",
    "career_stage",
    "sector",
    "interests",
)


def import_participants(path: Path, *, session: Session, now: datetime) -> ImportReport:
    """Create or update the participants in the CSV file ``path`` (matched by email).

    Columns: email, name, country, timezone, language; optional career_stage, sector, interests.
    An optional column the file does not have is left as it is in existing rows.  A row whose
    email is an alias updates the alias's participant, who keeps their address (a warning); a
    participant given twice (by an alias and their address, or by two aliases) is an error.
    """
    table = CsvFile(
        path,
        ("email", "name", "country", "timezone", "language"),
        ("career_stage", "sector", "interests"),
    )
    checks: dict[str, Callable[[str], Any]] = {
        "name": text_up_to(200),
        "country": check_country,
        "timezone": check_zone,
        "language": check_language,
        "career_stage": text_up_to(100),
        "sector": text_up_to(100),
        "interests": str,
    }
    present = [name for name in _PARTICIPANT_FIELDS if name in table.columns]
    required = {"name", "country", "timezone", "language"}
    seen: dict[str, int] = {}
    people: list[dict[str, Any]] = []
    for row in table.rows:
        email = table.get(row, "email", check_email)
        values = {
            name: table.get(row, name, checks[name], required=name in required) for name in present
        }
        if email is not None and table.unique(row, "email", email, seen):
            people.append({"email": email, **{name: values[name] or "" for name in present}})

    columns = [col(getattr(Participant, name)) for name in ("id", "email", *present)]
    existing = {r[1]: r for r in session.exec(select(*columns))}
    # An address in the file that is an alias (and not someone's own address) is its owner.
    owners = {
        alias: owner
        for alias, (_, owner) in _aliases(session).items()
        if alias in seen and alias not in existing
    }
    if owners:
        _aliased_rows(table, seen, owners)
    table.finish()

    report = ImportReport("participants", warnings=table.warnings)
    new, changed = [], []
    for person in people:
        if owners and person["email"] in owners:
            person["email"] = owners[person["email"]]  # they keep their current address
        old = existing.get(person["email"])
        if old is None:
            defaults = dict.fromkeys(("career_stage", "sector", "interests"), "")
            new.append(
                {**defaults, **person, "status": "active", "created_at": now, "updated_at": now}
            )
        elif tuple(old[2:]) != tuple(person[name] for name in present):
            changed.append({"id": old[0], **person, "updated_at": now})
        else:
            report.unchanged += 1
    if new:  # a Core insert: twice as fast as the ORM's for a large file
        session.exec(insert(SQLModel.metadata.tables["participant"]), params=new)
    if changed:
        session.exec(update(Participant), params=changed)
    report.created, report.updated = len(new), len(changed)
    return report


def _aliases(session: Session) -> dict[str, tuple[int, str]]:
    """Every alias (``participant address`` or ``alias``) -> its participant's id and email."""
    query = select(Alias.email, Participant.id, Participant.email).join(
        Participant, col(Participant.id) == col(Alias.participant_id)
    )
    return {alias: (int(id_ or 0), email) for alias, id_, email in session.exec(query)}


def _as_given(address: str, owner: str) -> str:
    return address if address == owner else f"{address} (an alias of {owner})"


def _now_alias(alias: str, owner: str) -> str:
    return f"{alias} is now an alias of {owner} (set by `rapport participant address` or `alias`)"


def _aliased_rows(table: CsvFile, seen: dict[str, int], owners: dict[str, str]) -> None:
    """Warn of each row of a participants file whose email is an alias (``owners``: alias ->
    participant's email; ``seen``: email -> line); a participant on two rows is an error."""
    given: dict[str, list[tuple[int, str]]] = {}  # participant's email -> rows (line, address)
    for alias in sorted(owners, key=seen.__getitem__):
        owner = owners[alias]
        message = f"{_now_alias(alias, owner)}; this row updates that participant"
        table.warn(seen[alias], "email", message)
        given.setdefault(owner, []).append((seen[alias], alias))
    for owner, rows in given.items():
        if owner in seen:
            rows.append((seen[owner], owner))
        (first_line, first), *later = sorted(rows)
        for line, address in later:
            table.error(
                line,
                "email",
                f"the same participant twice: line {first_line} gives {_as_given(first, owner)},"
                f" this row {_as_given(address, owner)}; keep one of the rows",
            )


def import_coordinators(
    path: Path, *, session: Session, now: datetime, default_timezone: str
) -> ImportReport:
    """Create or update the coordinators in the CSV file ``path`` (matched by email).

    Columns: email, name, role (``program`` or ``country``), countries (space-separated alpha-2
    codes; required for a country coordinator, ignored with a warning for a program one);
    optional timezone (an empty cell, or no column, means ``default_timezone``).
    """
    table = CsvFile(path, ("email", "name", "role", "countries"), ("timezone",))
    seen: dict[str, int] = {}
    people: list[dict[str, Any]] = []
    for row in table.rows:
        email = table.get(row, "email", check_email)
        name = table.get(row, "name", text_up_to(200))
        role = table.get(row, "role", _role)
        countries = table.get(row, "countries", _country_list, required=role == "country")
        zone = table.get(row, "timezone", check_zone, required=False) or default_timezone
        if role == "program" and countries:
            table.warn(row.line, "countries", "a program coordinator sees every country; ignored")
            countries = ""
        if email is None or not table.unique(row, "email", email, seen):
            continue
        people.append(
            {
                "email": email,
                "name": name,
                "role": role,
                "countries": countries or "",
                "timezone": zone,
            }
        )
    table.finish()

    fields = ("name", "role", "countries", "timezone")
    existing = {c.email: c for c in session.exec(select(Coordinator))}
    report = ImportReport("coordinators", warnings=table.warnings)
    new, changed = [], []
    for person in people:
        old = existing.get(person["email"])
        if old is None:
            new.append({**person, "created_at": now, "updated_at": now})
        elif any(getattr(old, name) != person[name] for name in fields):
            changed.append({"id": old.id, **person, "updated_at": now})
        else:
            report.unchanged += 1
    if new:
        session.exec(insert(Coordinator), params=new)
    if changed:
        session.exec(update(Coordinator), params=changed)
    report.created, report.updated = len(new), len(changed)
    return report


def _role(text: str) -> str:
    role = text.lower()
    if role not in ("program", "country"):
        raise Invalid(f"expected program or country; got {text!r}")
    return role


def _country_list(text: str) -> str:
    codes: list[str] = []
    for code in re.split(r"[\s,;]+", text.strip()):
        if check_country(code) not in codes:
            codes.append(code.upper())
    return " ".join(codes)


# -- partnerships ----------------------------------------------------------------------------

_MEMBERS = ("member_a", "member_b", "member_c")


def import_partnerships(path: Path, *, session: Session, now: datetime) -> ImportReport:
    """Create the pairs (and triads) in the CSV file ``path``.

    Columns: round, member_a, member_b; optional member_c.  Members are participants' emails
    (or aliases: the alias's participant, with a warning).
    A partnership already in the database with the same members in the same round is unchanged
    (a dissolved or ended one is not re-created, with a warning); a participant may be in one
    *active* partnership per round, so someone whose partnership was dissolved can be imported
    into a new one.  A partnership whose members all come from one country is imported with a
    warning: the program matches across borders.
    """
    table = CsvFile(path, ("round", *_MEMBERS[:2]), _MEMBERS[2:])
    rounds = {name: int(id_ or 0) for name, id_ in session.exec(select(Round.name, Round.id))}
    query = select(Participant.id, Participant.email, Participant.country, Participant.status)
    people: dict[str, tuple[int, str, str]] = {}  # email -> (id, country, status)
    emails: dict[int, str] = {}
    for id_, address, country, status in session.exec(query):
        people[address] = (int(id_ or 0), country, status)
        emails[int(id_ or 0)] = address
    for alias, (_, address) in _aliases(session).items():
        people.setdefault(alias, people[address])  # an own address wins over an alias

    wanted: list[tuple[int, Row, list[int], list[str]]] = []  # ..., members, as given
    for row in table.rows:
        errors = len(table.errors)
        round_name = table.get(row, "round", str)
        if round_name is not None and round_name not in rounds:
            hint = "create it with `rapport round create`"
            table.error(row.line, "round", f"no such round {round_name!r} ({hint})")
        members: list[int] = []
        given: list[str] = []
        for position, name in enumerate(_MEMBERS):
            email = table.get(row, name, check_email, required=position < 2)
            person = people.get(email or "")
            if email is None:
                continue
            if person is None:
                table.error(row.line, name, f"no participant {email} (import participants first)")
                continue
            shown = _as_given(email, emails[person[0]])
            if person[0] in members:
                first = given[members.index(person[0])]
                also = f", as {first}" if first != shown else ""
                table.error(
                    row.line, name, f"{shown} is already a member of this partnership{also}"
                )
                continue
            if shown != email:
                message = f"{_now_alias(email, emails[person[0]])}; that participant is the member"
                table.warn(row.line, name, message)
            members.append(person[0])
            given.append(shown)
        if len(table.errors) == errors and round_name is not None:
            wanted.append((rounds[round_name], row, members, given))

    # Only active partnerships place a participant: someone whose partnership was dissolved may
    # be partnered again in the same round.  The dissolved (or ended) ones are remembered so that
    # re-importing the original file does not bring them back.
    placed: dict[tuple[int, int], int] = {}  # (round, participant) -> active partnership
    groups: dict[int, set[int]] = {}  # partnership -> participants
    closed: dict[int, tuple[int, str]] = {}  # partnership no longer active -> (round, status)
    round_ids = {round_id for round_id, _, _, _ in wanted}
    if round_ids:
        query_m = select(
            Membership.round_id,
            Membership.participant_id,
            Membership.partnership_id,
            Partnership.status,
        ).join(Partnership, col(Partnership.id) == col(Membership.partnership_id))
        for round_id, pid, group, status in session.exec(
            query_m.where(col(Membership.round_id).in_(round_ids))
        ):
            groups.setdefault(group, set()).add(pid)
            if status == "active":
                placed[(round_id, pid)] = group
            else:
                closed[group] = (round_id, status)
    history = {
        (round_id, frozenset(groups[group])): status for group, (round_id, status) in closed.items()
    }

    report = ImportReport("partnerships", warnings=table.warnings)
    in_file: dict[tuple[int, int], tuple[int, str]] = {}  # (round, participant) -> line, as given
    new: list[tuple[int, list[int]]] = []
    for round_id, row, pids, given in wanted:
        label = row.values["round"]
        # A row naming a partnership that was dissolved (the file it came from, imported again)
        # is skipped before anything else, so that it blocks no one's new partnership.
        closed_as = history.get((round_id, frozenset(pids)))
        if closed_as is not None:
            message = f"this partnership was {closed_as} in {label}; not re-created"
            table.warn(row.line, None, message)
            report.unchanged += 1
            continue
        ok = True
        for name, pid, shown in zip(_MEMBERS, pids, given, strict=False):
            earlier, as_given = in_file.setdefault((round_id, pid), (row.line, shown))
            if earlier != row.line:
                also = f", as {as_given}" if as_given != shown else ""
                message = f"{shown} is already in the partnership on line {earlier}{also}"
                table.error(row.line, name, f"{message} ({label})")
                ok = False
        countries = {people[emails[pid]][1] for pid in pids}
        if len(countries) == 1:
            message = f"all members are from {countries.pop()}; the program matches across borders"
            table.warn(row.line, None, message)
        for name, pid in zip(_MEMBERS, pids, strict=False):
            if people[emails[pid]][2] != "active":
                table.warn(row.line, name, f"{emails[pid]} is {people[emails[pid]][2]}")
        group_id = placed.get((round_id, pids[0]))
        if group_id is not None and groups[group_id] == set(pids):
            report.unchanged += 1 if ok else 0
            continue
        for name, pid in zip(_MEMBERS, pids, strict=False):
            if (round_id, pid) in placed:
                others = ", ".join(
                    sorted(emails[p] for p in groups[placed[(round_id, pid)]] - {pid})
                )
                message = f"{emails[pid]} is already partnered with {others} in {label}"
                table.error(row.line, name, message)
                ok = False
        if ok:
            new.append((round_id, pids))
    table.finish()

    if new:
        rows = [
            {"round_id": round_id, "status": "active", "created_at": now} for round_id, _ in new
        ]
        returning = insert(Partnership).returning(col(Partnership.id), sort_by_parameter_order=True)
        ids = [r[0] for r in session.exec(returning, params=rows)]
        session.exec(
            insert(Membership),
            params=[
                {"partnership_id": id_, "participant_id": pid, "round_id": round_id, "position": n}
                for id_, (round_id, pids) in zip(ids, new, strict=True)
                for n, pid in enumerate(pids)
            ],
        )
    report.created = len(new)
    return report


# -- rounds and topics -----------------------------------------------------------------------


def create_round(
    name: str,
    *,
    session: Session,
    now: datetime,
    start: date,
    end: date | None,
    cadence_days: int = 14,
) -> Round:
    """Open a round named ``name`` starting on ``start`` with a topic every ``cadence_days`` days.

    Names are letters, digits, ``.``, ``_`` and ``-`` (they are part of the outbox's idempotency
    keys) and unique; ``end``, if given, is after ``start``; the cadence is 1 to 365 days.
    """
    problems = []
    if not ROUND_NAME.fullmatch(name):
        problems.append(
            f"round {name!r}: a name may use only letters, digits, '.', '_' and '-' (at most 100)"
        )
    elif session.exec(select(Round.id).where(Round.name == name)).first() is not None:
        problems.append(f"round {name}: already exists")
    if end is not None and end <= start:
        problems.append(f"round {name}: the end ({end}) must be after the start ({start})")
    if not 1 <= cadence_days <= 365:
        problems.append(f"round {name}: the cadence must be 1 to 365 days, not {cadence_days}")
    if problems:
        raise UsageError("\n".join(problems))
    round_ = Round(
        name=name, start=start, end=end, cadence_days=cadence_days, status="active", created_at=now
    )
    session.add(round_)
    session.flush()
    return round_


def list_rounds(*, session: Session) -> list[Round]:
    """Every round, the earliest start first."""
    return list(session.exec(select(Round).order_by(col(Round.start), col(Round.name))))


def import_topics(
    directory: Path, *, session: Session, now: datetime, round_name: str, default_language: str
) -> ImportReport:
    """Create or update round ``round_name``'s topics from ``directory`` (see program/topics.py)."""
    from program.topics import import_topics as import_folder  # builds on this module

    return import_folder(
        directory,
        session=session,
        now=now,
        round_name=round_name,
        default_language=default_language,
    )


def add_alias(email: str, address: str, *, session: Session, now: datetime) -> bool:
    """Let mail from ``address`` count as ``email``'s (``rapport participant alias``).

    Returns False when that alias was already there; UsageError for an unknown participant, a
    malformed address, or an address that is another participant's.
    """
    try:
        owner_email, alias = check_email(email.strip()), check_email(address.strip())
    except Invalid as exc:
        raise UsageError(f"participant alias: {exc}") from None
    owner = session.exec(select(Participant).where(Participant.email == owner_email)).first()
    if owner is None:
        raise NotFound(f"participant {owner_email}: not found")
    if session.exec(select(Participant).where(Participant.email == alias)).first():
        raise UsageError(f"{alias} is a participant's own address, not an alias")
    existing = session.exec(select(Alias).where(Alias.email == alias)).first()
    if existing is not None:
        if existing.participant_id != owner.id:
            raise UsageError(f"{alias} is already an alias of another participant")
        return False
    owner_id = cast(int, owner.id)  # loaded from the database, so it has one
    session.add(Alias(email=alias, participant_id=owner_id, created_at=now))
    session.flush()
    return True
