"""The program's people, pairs and rounds: CSV imports of participants, coordinators and
partnerships, and round creation.  Topic imports live in program/topics.py.

Every importer reads the whole file and checks every row before it writes anything; when it
finds a problem it raises :class:`InputError` listing every problem in the file (file, line,
column, field), so the caller, which owns the transaction, rolls back: an import is all or
nothing, and ``--dry-run`` is the same call rolled back.  Rows are matched by their natural key
(an email address; a partnership's round and members), so re-importing a file is safe and
reports what it created, updated and left unchanged.

Line numbers are physical lines of the file (1-based), the first line of a record when a quoted
field spans several; columns are 1-based CSV column numbers.  ``now`` is an aware UTC datetime.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import available_timezones

import pycountry
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import insert, update
from sqlmodel import Session, SQLModel, col, select

from program.errors import InputError, Problem, UsageError
from program.models import Coordinator, Membership, Participant, Partnership, Round

__all__ = [
    "ImportReport",
    "Invalid",
    "check_country",
    "check_email",
    "check_language",
    "check_zone",
    "create_round",
    "import_coordinators",
    "import_participants",
    "import_partnerships",
    "import_topics",
    "list_rounds",
    "read_text",
]

T = TypeVar("T")
ROUND_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_LANGUAGE = re.compile(r"([A-Za-z]{2,3})((?:[-_][A-Za-z0-9]{1,8})*)")
_MAX_ENCODING_PROBLEMS = 20
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")


class Invalid(ValueError):
    """A value that does not fit its field; the importer adds the file, line and column."""


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


# -- checks shared by the CSV and topic importers --------------------------------------------


@cache
def _countries() -> frozenset[str]:
    return frozenset(country.alpha_2 for country in pycountry.countries)


@cache
def _zones() -> dict[str, str]:
    """Every IANA zone name, keyed by its lower-case spelling."""
    return {name.lower(): name for name in available_timezones()}


@cache
def _languages() -> frozenset[str]:
    codes = set()
    for language in pycountry.languages:
        codes.add(language.alpha_3)
        codes.add(getattr(language, "alpha_2", language.alpha_3))
    return frozenset(codes)


def check_email(text: str) -> str:
    """A plain ASCII address (the mailer does not use SMTPUTF8), lower-cased."""
    # Fast path for a large file: a plain dot-atom local part and a domain seen before are
    # what email_validator would accept; anything else gets the full check and its message.
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and len(text) <= 254 and _DOT_ATOM.fullmatch(local):
        checked = _domain(domain)
        if checked is not None:
            return f"{local}@{checked}".lower()
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise Invalid(f"not a valid email address: {text!r} ({exc})") from None
    return result.normalized.lower()


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    try:
        return validate_email(
            f"x@{domain}", check_deliverability=False, allow_smtputf8=False
        ).domain
    except EmailNotValidError:
        return None


def check_country(text: str) -> str:
    """An ISO 3166-1 alpha-2 code in any case, returned in upper case."""
    code = text.upper()
    if code not in _countries():
        raise Invalid(f"unknown country code {text!r} (use ISO 3166 alpha-2, like FR or NZ)")
    return code


def check_zone(text: str) -> str:
    """An IANA time zone name in any case, returned in its canonical spelling."""
    zone = _zones().get(text.lower())
    if zone is None:
        raise Invalid(f"unknown time zone {text!r} (use an IANA name like Europe/Paris)")
    return zone


@lru_cache(maxsize=1024)
def check_language(text: str) -> str:
    """A language tag like ``en``, ``fr`` or ``pt-BR`` (``pt_br`` too), normalized.

    The primary subtag must be an ISO 639 code; a two-letter region must be an ISO 3166 code.
    """
    match = _LANGUAGE.fullmatch(text)
    if match is None:
        raise Invalid(f"{text!r} is not a language code like en, fr, es or pt-BR")
    primary = match.group(1).lower()
    if primary not in _languages():
        where = f" in {text!r}" if primary != text.lower() else ""
        raise Invalid(f"unknown language {primary!r}{where} (use an ISO 639 code like en or fr)")
    parts = [primary]
    for subtag in re.split(r"[-_]", match.group(2))[1:]:
        if len(subtag) == 2 and subtag.isalpha():
            if subtag.upper() not in _countries():
                raise Invalid(f"unknown region {subtag!r} in language code {text!r}")
            parts.append(subtag.upper())
        elif len(subtag) == 4 and subtag.isalpha():
            parts.append(subtag.title())
        else:
            parts.append(subtag.lower())
    tag = "-".join(parts)
    if len(tag) > 16:
        raise Invalid(f"language code {text!r} is longer than 16 characters")
    return tag


def _text(limit: int) -> Callable[[str], str]:
    def check(text: str) -> str:
        if len(text) > limit:
            raise Invalid(f"longer than {limit} characters ({len(text)})")
        return text

    return check


def read_text(path: Path) -> tuple[str | None, list[Problem]]:
    """The text of a UTF-8 file (a leading BOM dropped), or None and the problems found."""
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, [Problem(name, None, None, None, "no such file")]
    except IsADirectoryError:
        return None, [Problem(name, None, None, None, "is a folder, not a file")]
    except OSError as exc:
        return None, [Problem(name, None, None, None, f"cannot read: {exc.strerror}")]
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None, [Problem(name, 1, None, None, "the file is UTF-16; save it as UTF-8")]
    problems = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(
                    name,
                    number,
                    None,
                    None,
                    f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line"
                    " (save the file as UTF-8)",
                )
            )
    if len(problems) > _MAX_ENCODING_PROBLEMS:
        more = len(problems) - _MAX_ENCODING_PROBLEMS
        problems = problems[:_MAX_ENCODING_PROBLEMS]
        problems.append(
            Problem(name, None, None, None, f"and {more} more lines that are not UTF-8")
        )
    return None, problems


# -- reading a CSV file ----------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    values: dict[str, str]
    bad: set[str]  # columns whose raw value was already reported (a line break, a NUL)


_CSV_ERRORS = (  # the csv module's messages, by their start, in words a spreadsheet user knows
    ("unexpected end of data", "a quoted field is never closed (a missing closing quote)"),
    ("',' expected after '\"'", 'unexpected text after a closing quote (write "" for a quote)'),
    ("new-line character seen in unquoted field", "a carriage return (CR) inside a field"),
    ("field larger than field limit", "a field is too long"),
)


class _Csv:
    """A CSV file read and checked row by row; problems pile up until :meth:`finish`."""

    def __init__(self, path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        self.file = str(path)
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.columns: dict[str, int] = {}
        self.rows: list[_Row] = []
        text, self.errors = read_text(path)
        if text is None:
            raise InputError(self.errors)
        records = self._records(text)
        if not records or not any(value.strip() for value in records[0][1]):
            expected = ", ".join(required)
            self.error(
                1,
                None,
                f"the file is empty or its first line is blank; expected a header row: {expected}",
            )
            raise InputError(self.errors)
        before = len(self.errors)
        self._header(*records[0], required, optional)
        if len(self.errors) > before:
            self.finish()  # without the columns, the rows cannot be checked
        for line, values in records[1:]:
            self._row(line, values)

    def _records(self, text: str) -> list[tuple[int, list[str]]]:
        # Only LF ends a line (CRLF too): a CR elsewhere is reported, not taken as a line end.
        reader = csv.reader(io.StringIO(text, newline="\n"), strict=True)
        records: list[tuple[int, list[str]]] = []
        line = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return records
            except csv.Error as exc:
                # The reader drops the rest of the bad record and starts afresh on the next line.
                text = str(exc)
                words = [ours for theirs, ours in _CSV_ERRORS if text.startswith(theirs)]
                self.error(line, None, words[0] if words else f"malformed CSV: {text}")
                if not records:
                    raise InputError(self.errors) from None  # no header to check the rest by
            else:
                records.append((line, values))
            line = reader.line_num + 1

    def _header(
        self, line: int, names: list[str], required: Sequence[str], optional: Sequence[str]
    ) -> None:
        known = f"expected {', '.join(required)}" + (
            f"; optional {', '.join(optional)}" if optional else ""
        )
        for number, raw in enumerate(names, start=1):
            name = raw.strip().lower()
            if not name:
                self.errors.append(
                    Problem(self.file, line, number, None, f"a column without a name ({known})")
                )
            elif name not in required and name not in optional:
                self.errors.append(
                    Problem(self.file, line, number, raw, f"unknown column ({known})")
                )
            elif name in self.columns:
                self.errors.append(
                    Problem(
                        self.file,
                        line,
                        number,
                        name,
                        f"duplicate column (also column {self.columns[name]})",
                    )
                )
            else:
                self.columns[name] = number
        for name in required:
            if name not in self.columns:
                self.errors.append(
                    Problem(self.file, line, None, name, "required column is missing")
                )

    def _row(self, line: int, values: list[str]) -> None:
        joined = "".join(values)
        if not joined.strip():
            return  # a blank line, or a spreadsheet's row of empty cells
        if len(values) != len(self.columns):
            counts = f"{len(values)} fields, but the header has {len(self.columns)} columns"
            self.error(line, None, counts)
            return
        row = _Row(line, dict(zip(self.columns, (v.strip() for v in values), strict=True)), set())
        if "\n" in joined or "\r" in joined or "\0" in joined:
            for name, number in self.columns.items():
                raw = values[number - 1]
                if "\n" in raw or "\r" in raw:
                    self.error(line, name, "contains a line break")
                    row.bad.add(name)
                elif "\0" in raw:
                    self.error(line, name, "contains a NUL character")
                    row.bad.add(name)
        self.rows.append(row)

    def error(self, line: int | None, name: str | None, message: str) -> None:
        self.errors.append(Problem(self.file, line, self.columns.get(name or ""), name, message))

    def warn(self, line: int | None, name: str | None, message: str) -> None:
        self.warnings.append(Problem(self.file, line, self.columns.get(name or ""), name, message))

    def get(
        self, row: _Row, name: str, check: Callable[[str], T], *, required: bool = True
    ) -> T | None:
        """The checked value of ``name`` in ``row``; None (and a problem noted) if it is bad.

        An empty optional field, or a column the file does not have, is None without a problem.
        """
        if name in row.bad or name not in self.columns:
            return None
        raw = row.values[name]
        if not raw:
            if required:
                self.error(row.line, name, "must not be empty")
            return None
        try:
            return check(raw)
        except Invalid as exc:
            self.error(row.line, name, str(exc))
            return None

    def unique(self, row: _Row, name: str, key: str, seen: dict[str, int]) -> bool:
        """Note ``key`` as seen on this row; False (and a problem noted) if a row before had it."""
        if key in seen:
            self.error(row.line, name, f"{key} is already on line {seen[key]}")
            return False
        seen[key] = row.line
        return True

    def finish(self) -> None:
        """Raise InputError with every problem found, in the order of the file."""
        if self.errors:
            raise InputError(sorted(self.errors, key=lambda p: (p.line or 0, p.column or 0)))


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
    An optional column the file does not have is left as it is in existing rows.
    """
    table = _Csv(
        path,
        ("email", "name", "country", "timezone", "language"),
        ("career_stage", "sector", "interests"),
    )
    checks: dict[str, Callable[[str], Any]] = {
        "name": _text(200),
        "country": check_country,
        "timezone": check_zone,
        "language": check_language,
        "career_stage": _text(100),
        "sector": _text(100),
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
    table.finish()

    columns = [col(getattr(Participant, name)) for name in ("id", "email", *present)]
    existing = {r[1]: r for r in session.exec(select(*columns))}
    report = ImportReport("participants", warnings=table.warnings)
    new, changed = [], []
    for person in people:
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


def import_coordinators(
    path: Path, *, session: Session, now: datetime, default_timezone: str
) -> ImportReport:
    """Create or update the coordinators in the CSV file ``path`` (matched by email).

    Columns: email, name, role (``program`` or ``country``), countries (space-separated alpha-2
    codes; required for a country coordinator, ignored with a warning for a program one);
    optional timezone (an empty cell, or no column, means ``default_timezone``).
    """
    table = _Csv(path, ("email", "name", "role", "countries"), ("timezone",))
    seen: dict[str, int] = {}
    people: list[dict[str, Any]] = []
    for row in table.rows:
        email = table.get(row, "email", check_email)
        name = table.get(row, "name", _text(200))
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

    Columns: round, member_a, member_b; optional member_c.  Members are participants' emails.
    A partnership already in the database with the same members in the same round is unchanged;
    a participant may be in one partnership per round.  A partnership whose members all come
    from one country is imported with a warning: the program matches across borders.
    """
    table = _Csv(path, ("round", *_MEMBERS[:2]), _MEMBERS[2:])
    rounds = {name: int(id_ or 0) for name, id_ in session.exec(select(Round.name, Round.id))}
    query = select(Participant.id, Participant.email, Participant.country, Participant.status)
    people: dict[str, tuple[int, str, str]] = {}  # email -> (id, country, status)
    emails: dict[int, str] = {}
    for id_, address, country, status in session.exec(query):
        people[address] = (int(id_ or 0), country, status)
        emails[int(id_ or 0)] = address

    wanted: list[tuple[int, _Row, list[int]]] = []
    for row in table.rows:
        errors = len(table.errors)
        round_name = table.get(row, "round", str)
        if round_name is not None and round_name not in rounds:
            hint = "create it with `rapport round create`"
            table.error(row.line, "round", f"no such round {round_name!r} ({hint})")
        members: list[int] = []
        for position, name in enumerate(_MEMBERS):
            email = table.get(row, name, check_email, required=position < 2)
            person = people.get(email or "")
            if email is None:
                continue
            if person is None:
                table.error(row.line, name, f"no participant {email} (import participants first)")
            elif person[0] in members:
                table.error(row.line, name, f"{email} is already a member of this partnership")
            else:
                members.append(person[0])
        if len(table.errors) == errors and round_name is not None:
            wanted.append((rounds[round_name], row, members))

    placed: dict[tuple[int, int], int] = {}  # (round, participant) -> partnership
    groups: dict[int, set[int]] = {}  # partnership -> participants
    round_ids = {round_id for round_id, _, _ in wanted}
    if round_ids:
        query_m = select(Membership.round_id, Membership.participant_id, Membership.partnership_id)
        for round_id, pid, group in session.exec(
            query_m.where(col(Membership.round_id).in_(round_ids))
        ):
            placed[(round_id, pid)] = group
            groups.setdefault(group, set()).add(pid)

    report = ImportReport("partnerships", warnings=table.warnings)
    in_file: dict[tuple[int, int], int] = {}  # (round, participant) -> line
    new: list[tuple[int, list[int]]] = []
    for round_id, row, pids in wanted:
        label = row.values["round"]
        ok = True
        for name, pid in zip(_MEMBERS, pids, strict=False):
            earlier = in_file.setdefault((round_id, pid), row.line)
            if earlier != row.line:
                message = f"{emails[pid]} is already in the partnership on line {earlier}"
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
