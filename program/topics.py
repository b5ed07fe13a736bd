"""Topic imports: a folder of Markdown files with TOML front matter, one topic per file.

``NAME.md`` holds a topic in the program's default language; a translation sits beside it as
``NAME.<lang>.md`` (``intro.fr.md``, ``intro.pt-BR.md``).  Each file starts with front matter
between two ``+++`` lines::

    +++
    title = "A day in your library"
    order = 2                 # the topic's number in the round, from 1
    send_on = 2027-03-15      # optional: its own day instead of start + (order - 1) * cadence
    +++
    The Markdown body...

A translation has its own ``title``; it may leave out ``order`` and ``send_on``, and must agree
with its base file where it gives them.  Topics are matched by round and order, so re-importing
a folder updates titles and bodies in place.  A body holds at most ``MAX_BODY`` characters: every
participant gets it as an email.  As with the CSV imports, every problem in the folder
is reported at once and nothing is written unless there are none.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from program.csvinput import Invalid, check_language, control_character, read_text
from program.errors import InputError, NotFound, Problem
from program.models import Round, Topic, TopicText
from program.roster import ImportReport

__all__ = ["import_topics"]

FENCE = "+++"
KEYS = ("title", "order", "send_on")
MAX_ORDER = 500  # far more topics than any round has; keeps every send date computable
# Characters of Markdown in one topic: some fifty pages.  A topic goes to every participant as
# an email, so a body far past this is a mistake (a pasted file), not a discussion topic.
MAX_BODY = 100_000
_LANGUAGE_SHAPE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


@dataclass
class _File:
    """One parsed topic file: a base (``language`` None) or a translation."""

    path: Path
    topic: str  # NAME, shared by a base and its translations
    language: str | None
    title: str = ""
    body: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # order and send_on, as given
    lines: dict[str, int] = field(default_factory=dict)  # front matter key -> file line
    complete: bool = False  # the front matter was read (its values may still be refused)


class _Folder:
    """The problems found in one topic folder so far."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: Path, line: int | None, key: str | None, message: str) -> None:
        self.errors.append(Problem(str(path), line, None, key, message))


def import_topics(
    directory: Path, *, session: Session, now: datetime, round_name: str, default_language: str
) -> ImportReport:
    """Create or update the topics of round ``round_name`` from the Markdown files in ``directory``.

    Base files are stored in ``default_language``.  Topics already in the round but missing from
    the folder are left as they are, with a warning.  ``now`` (UTC) stamps the rows written.
    """
    round_ = session.exec(select(Round).where(Round.name == round_name)).first()
    if round_ is None:
        raise NotFound(f"round {round_name}: no such round (create it with `rapport round create`)")
    if not directory.is_dir():
        problem = "no such folder" if not directory.exists() else "is a file, not a folder"
        raise InputError([Problem(str(directory), None, None, None, problem)])
    try:
        default = check_language(default_language)
    except Invalid:
        default = default_language
    folder = _Folder()
    bases, translations = _read_folder(directory, folder, default)
    for base in bases.values():
        _check_dates(base, round_, folder)
    if folder.errors:
        raise InputError(sorted(folder.errors, key=lambda p: (p.file, p.line or 0, p.column or 0)))

    report = ImportReport("topics", warnings=folder.warnings)
    existing = {t.seq: t for t in session.exec(select(Topic).where(Topic.round_id == round_.id))}
    texts = {
        (t.topic_id, t.language): t
        for t in session.exec(
            select(TopicText).where(col(TopicText.topic_id).in_([t.id for t in existing.values()]))
        )
    }
    for order, base in sorted(bases.items()):
        wanted = {default: base} | {t.language or "": t for t in translations.get(base.topic, [])}
        send_on = base.values.get("send_on")
        topic = existing.get(order)
        created = topic is None
        if topic is None:
            topic = Topic(
                round_id=round_.id or 0,
                seq=order,
                send_on=send_on,
                source=base.path.name,
                created_at=now,
                updated_at=now,
            )
            session.add(topic)
            session.flush()
            report.created += 1
        changed = topic.send_on != send_on or topic.source != base.path.name
        topic.send_on, topic.source = send_on, base.path.name
        for language, text in wanted.items():
            row = texts.get((topic.id or 0, language))
            if row is None:
                row = TopicText(topic_id=topic.id or 0, language=language, title="", body="")
                session.add(row)
            if (row.title, row.body) != (text.title, text.body):
                row.title, row.body = text.title, text.body
                changed = True
        if created:
            continue
        if changed:
            topic.updated_at = now
            report.updated += 1
        else:
            report.unchanged += 1
    for order, topic in sorted(existing.items()):
        if order not in bases:
            message = f"topic {order} ({topic.source}) is in round {round_name} but not in this"
            report.warnings.append(
                Problem(str(directory), None, None, None, message + " folder; left as it is")
            )
    session.flush()
    return report


def _read_folder(
    directory: Path, folder: _Folder, default: str
) -> tuple[dict[int, _File], dict[str, list[_File]]]:
    """Parse every ``*.md`` file; returns the base files by order and translations by topic."""
    paths = sorted(
        p for p in directory.iterdir() if p.suffix == ".md" and p.is_file() and p.name[0] != "."
    )
    if not paths:
        folder.error(directory, None, None, "no topic files (NAME.md) in this folder")
    files = [f for f in (_parse_file(path, folder, default) for path in paths) if f is not None]
    bases: dict[int, _File] = {}
    by_name: dict[str, _File] = {}
    for base in (f for f in files if f.language is None):
        by_name[base.topic] = base
        order = base.values.get("order")
        if not isinstance(order, int):
            continue
        if order in bases:
            line = base.lines.get("order")
            folder.error(
                base.path, line, "order", f"order {order} is also {bases[order].path.name}'s"
            )
        else:
            bases[order] = base
    translations: dict[str, list[_File]] = {}
    for text in (f for f in files if f.language is not None):
        original = by_name.get(text.topic)
        if original is None:
            message = f"a translation of {text.topic}.md, which is not in this folder"
            folder.error(text.path, None, None, message)
            continue
        for key in ("order", "send_on"):
            mine, theirs = text.values.get(key), original.values.get(key)
            if mine is None or mine == theirs or not original.complete:
                continue
            if theirs is None and key == "order":
                continue  # a base without a valid order is reported on the base
            given = f"{key} = {theirs}" if theirs is not None else f"no {key}"
            message = f"{mine} differs from the base file {original.path.name} ({given})"
            folder.error(text.path, text.lines.get(key), key, message)
        same = [t for t in translations.get(text.topic, []) if t.language == text.language]
        if same:
            message = f"the same language ({text.language}) as {same[0].path.name}"
            folder.error(text.path, None, None, message)
        translations.setdefault(text.topic, []).append(text)
    return bases, translations


def _parse_file(path: Path, folder: _Folder, default: str) -> _File | None:
    """One file's front matter and body (problems noted); None if its name is unusable."""
    stem = path.name[: -len(".md")]
    topic, dot, suffix = stem.rpartition(".")
    language: str | None = None
    if dot and _LANGUAGE_SHAPE.fullmatch(suffix):
        try:
            language = check_language(suffix)
        except Invalid as exc:
            folder.error(path, None, None, f"the file name's language: {exc}")
            return None
        if language == default:
            message = f"{language} is the default language: this text belongs in {topic}.md"
            folder.error(path, None, None, message)
            return None
    else:
        topic = stem
    # From here on the file counts as present (a translation can refer to it) even when its
    # content has problems; they are noted, and nothing is written while there are any.
    parsed = _File(path, topic, language)
    text, problems = read_text(path)
    if text is None:
        folder.errors.extend(problems)
        return parsed
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[0].strip() != FENCE:
        folder.error(path, 1, None, f"must start with a line {FENCE} opening the TOML front matter")
        return parsed
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == FENCE), None)
    if end is None:
        folder.error(path, 1, None, f"the front matter is never closed by a line {FENCE}")
        return parsed
    front = "\n".join(lines[1:end]) + "\n"
    try:
        data = tomllib.loads(front)
    except tomllib.TOMLDecodeError as exc:
        message, line, column = str(exc), end + 1, None
        if where := _TOML_WHERE.search(message):
            line, column = int(where.group(1)) + 1, int(where.group(2))
            message = message[: where.start()]
        message = message.replace(" (at end of document)", "")
        folder.errors.append(Problem(str(path), line, column, None, f"front matter: {message}"))
        return parsed
    parsed.complete = True
    for number, source in enumerate(lines[1:end], start=2):
        if key := _KEY_LINE.match(source):
            parsed.lines.setdefault(key.group(1), number)
    _check_front_matter(parsed, data, folder)
    body_lines = lines[end + 1 :]
    while body_lines and not body_lines[0].strip():
        body_lines.pop(0)
    parsed.body = "\n".join(body_lines).rstrip()
    if "\0" in parsed.body:
        line = end + 2 + next(i for i, s in enumerate(lines[end + 1 :]) if "\0" in s)
        folder.error(path, line, None, "contains a NUL character")
    elif not parsed.body:
        folder.error(path, end + 1, None, "the topic has no text after the front matter")
    elif len(parsed.body) > MAX_BODY:
        message = (
            f"the text is longer than {MAX_BODY:,} characters ({len(parsed.body):,});"
            " a topic is sent as an email to every participant"
        )
        first = end + 2 + (len(lines) - end - 1 - len(body_lines))  # the text's first line
        folder.error(path, first, None, message)
    return parsed


def _check_front_matter(parsed: _File, data: dict[str, Any], folder: _Folder) -> None:
    def bad(key: str, message: str) -> None:
        folder.error(parsed.path, parsed.lines.get(key, 1), key, message)

    for key in data:
        if key not in KEYS:
            bad(key, f"unknown key (known: {', '.join(KEYS)})")
    title = data.get("title")
    if title is None:
        bad("title", "is required")
    elif not isinstance(title, str) or not title.strip():
        bad("title", "must be a non-empty string in quotes")
    elif control_character(title):
        bad("title", f"must be one line of text; it contains {control_character(title)}")
    elif len(title.strip()) > 300:
        bad("title", f"longer than 300 characters ({len(title.strip())})")
    else:
        parsed.title = title.strip()
    if "order" in data:
        order = data["order"]
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            bad("order", f"must be a whole number from 1 to {MAX_ORDER}; got {order!r}")
        else:
            parsed.values["order"] = order
    elif parsed.language is None:
        bad("order", "is required (the topic's number in the round: 1, 2, ...)")
    if "send_on" in data:
        send_on = data["send_on"]
        if isinstance(send_on, datetime) or not isinstance(send_on, date):
            bad(
                "send_on",
                f"must be a date like 2027-03-15, without quotes or time; got {send_on!r}",
            )
        else:
            parsed.values["send_on"] = send_on


def _check_dates(base: _File, round_: Round, folder: _Folder) -> None:
    """Warn about a ``send_on`` outside the round: allowed, but rarely meant."""
    send_on = base.values.get("send_on")
    if send_on is None:
        return
    line = base.lines.get("send_on")
    if send_on < round_.start:
        message = f"{send_on} is before round {round_.name} starts ({round_.start})"
        folder.warnings.append(Problem(str(base.path), line, None, "send_on", message))
    elif round_.end is not None and send_on > round_.end:
        message = f"{send_on} is after round {round_.name} ends ({round_.end})"
        folder.warnings.append(Problem(str(base.path), line, None, "send_on", message))


@dataclass(frozen=True)
class ScheduledTopic:
    """One line of `rapport topics list`."""

    round_name: str
    order: int
    send_date: date
    languages: tuple[str, ...]
    title: str


def schedule(
    *, session: Session, round_name: str | None, default_language: str
) -> list[ScheduledTopic]:
    """Every topic with its send date, by round start then order; NotFound for an unknown round."""
    from program import calendar

    query = select(Round).order_by(col(Round.start), col(Round.name))
    if round_name:
        query = query.where(Round.name == round_name)
    rounds = list(session.exec(query))
    if round_name and not rounds:
        raise NotFound(f"round {round_name}: no such round")
    out = []
    for round_ in rounds:
        for topic in session.exec(
            select(Topic).where(Topic.round_id == round_.id).order_by(col(Topic.seq))
        ):
            texts = {
                t.language: t
                for t in session.exec(select(TopicText).where(TopicText.topic_id == topic.id))
            }
            text = texts.get(default_language) or texts[sorted(texts)[0]]
            day = calendar.topic_send_date(
                round_.start, round_.cadence_days, topic.seq, topic.send_on
            )
            out.append(
                ScheduledTopic(round_.name, topic.seq, day, tuple(sorted(texts)), text.title)
            )
    return out
