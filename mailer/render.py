"""From outbox rows to the composer's inputs: load what each message needs, in batches.

A batch of rows is loaded with a handful of queries (rows, their participants, their partners, the
topics' texts), so composing 20,000 topic emails costs a few hundred queries, not 100,000.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Any

from sqlalchemy import Connection, Engine, select

from mailer import outbox
from mailer.compose import Composer, Person, TopicEmail
from mailer.notice import Notice
from mailer.plan import topic_key
from program.errors import NotFound
from program.models import MEMBERSHIPS, PARTICIPANTS, ROUNDS, SUPPRESSIONS, TOPIC_TEXTS, TOPICS
from program.replykey import message_id, reply_key
from program.settings import Settings


@dataclass
class Item:
    """One outbox row with what composing it needs."""

    row: Any
    context: TopicEmail | Notice | None
    problem: str | None = None


def address_for(template: str, key: str) -> str:
    """``coordinators+{key}@example.org`` with the key put in."""
    return template.replace("{key}", key)


def pick_text(texts: dict[tuple[int, str], Any], topic_id: int, language: str, default: str) -> Any:
    """The topic's text in the participant's language (pt-BR, else pt), else the program's."""
    base = language.split("-", 1)[0]
    for lang in (language, base, default, "en"):
        if (topic_id, lang) in texts:
            return texts[(topic_id, lang)]
    candidates = [t for (tid, _lang), t in sorted(texts.items()) if tid == topic_id]
    return candidates[0] if candidates else None


def _person(row: Any, blocked: frozenset[str] = frozenset()) -> Person:
    """A participant row as the composer sees it; not ``reachable`` when their mail bounces or
    their address is in ``blocked`` (suppressed)."""
    return Person(
        name=row.name,
        email=row.email,
        country=row.country,
        timezone=row.timezone,
        reachable=row.bouncing_since is None and row.email not in blocked,
    )


def _blocked(connection: Connection, emails: set[str]) -> frozenset[str]:
    """Which of ``emails`` are suppressed (unsubscribed or undeliverable)."""
    found: set[str] = set()
    ordered = sorted(emails)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        query = select(SUPPRESSIONS.c.email).where(SUPPRESSIONS.c.email.in_(chunk))
        found.update(connection.execute(query).scalars())
    return frozenset(found)


class Renderer:
    """Loads contexts for outbox rows and composes them; holds no per-message state."""

    def __init__(self, engine: Engine, *, settings: Settings, composer: Composer) -> None:
        self.engine = engine
        self.settings = settings
        self.composer = composer

    def load(self, ids: Sequence[int]) -> Iterator[Item]:
        """The rows ``ids`` (those still there), each with its context, in id order."""
        if not ids:
            return
        participants = PARTICIPANTS
        members = MEMBERSHIPS
        texts = TOPIC_TEXTS
        topics = TOPICS
        rounds = ROUNDS
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(outbox.OUTBOX)
                .where(outbox.OUTBOX.c.id.in_(list(ids)))
                .order_by(outbox.OUTBOX.c.id)
            ).all()
            partnership_ids = {r.partnership_id for r in rows if r.partnership_id}
            people: dict[int, Any] = {}
            by_partnership: dict[int, list[int]] = defaultdict(list)
            if partnership_ids:
                for m in connection.execute(
                    select(members.c.partnership_id, members.c.participant_id)
                    .where(members.c.partnership_id.in_(partnership_ids))
                    .order_by(members.c.partnership_id, members.c.position)
                ):
                    by_partnership[m.partnership_id].append(m.participant_id)
            wanted = {pid for group in by_partnership.values() for pid in group}
            wanted |= {r.participant_id for r in rows if r.participant_id}
            if wanted:
                for p in connection.execute(
                    select(participants).where(participants.c.id.in_(wanted))
                ):
                    people[p.id] = p
            partner_ids = {pid for group in by_partnership.values() for pid in group}
            blocked = _blocked(
                connection, {people[pid].email for pid in partner_ids if pid in people}
            )
            topic_ids = {r.topic_id for r in rows if r.topic_id}
            topic_rows: dict[int, Any] = {}
            text_rows: dict[tuple[int, str], Any] = {}
            round_names: dict[int, str] = {}
            if topic_ids:
                for t in connection.execute(select(topics).where(topics.c.id.in_(topic_ids))):
                    topic_rows[t.id] = t
                for t in connection.execute(select(texts).where(texts.c.topic_id.in_(topic_ids))):
                    text_rows[(t.topic_id, t.language)] = t
                round_ids = {t.round_id for t in topic_rows.values()}
                for r in connection.execute(
                    select(rounds.c.id, rounds.c.name).where(rounds.c.id.in_(round_ids))
                ):
                    round_names[r.id] = r.name
        for row in rows:
            if row.kind != "topic":
                yield self._notice(row)
                continue
            person = people.get(row.participant_id)
            topic = topic_rows.get(row.topic_id)
            if person is None or topic is None:
                yield Item(row, None, "its participant or topic no longer exists")
                continue
            partners = tuple(
                _person(people[pid], blocked)
                for pid in by_partnership.get(row.partnership_id, [])
                if pid != person.id
            )
            text = pick_text(
                text_rows, topic.id, person.language, self.settings.program.default_language
            )
            if text is None:
                yield Item(row, None, f"topic {topic.seq} has no text")
                continue
            yield Item(
                row, self._context(row, person, partners, topic, text, round_names[topic.round_id])
            )

    def _notice(self, row: Any) -> Item:
        """A nudge, alert or report: everything it says is in the row's payload."""
        try:
            payload = json.loads(row.payload or "")
            recipient = payload["recipient"]
            program = self.settings.program
            participant = bool(row.participant_id) and not row.coordinator_id
            url = program.unsubscribe_url
            notice = Notice(
                template=str(payload["template"]),
                language=str(payload.get("language") or program.default_language),
                default_language=program.default_language,
                program_name=program.name,
                from_address=program.from_address,
                recipient_name=str(recipient["name"]),
                recipient_email=row.to_address,
                idempotency_key=row.key,
                message_id=row.message_id,
                reply_address=address_for(program.reply_address, row.reply_key),
                unsubscribe_address=(
                    address_for(program.reply_address, f"unsubscribe-{row.reply_key}")
                    if participant
                    else None
                ),
                unsubscribe_url=(
                    url.replace("{key}", row.reply_key) if participant and url else None
                ),
                data=payload.get("data") or {},
            )
        except (ValueError, KeyError, TypeError) as exc:
            return Item(row, None, f"its payload is unreadable: {exc!r}")
        return Item(row, notice)

    def _context(
        self,
        row: Any,
        person: Any,
        partners: tuple[Person, ...],
        topic: Any,
        text: Any,
        round_name: str,
    ) -> TopicEmail:
        return topic_email(
            self.settings,
            row.key,
            row.reply_key,
            _person(person),
            partners,
            topic.seq,
            text,
            round_name,
            row.message_id,
        )


def topic_email(
    settings: Settings,
    key: str,
    reply_key: str,
    recipient: Person,
    partners: tuple[Person, ...],
    order: int,
    text: Any,
    round_name: str,
    message_id: str,
) -> TopicEmail:
    """The composer's input for one participant's topic email."""
    program = settings.program
    url = program.unsubscribe_url.replace("{key}", reply_key) if program.unsubscribe_url else None
    # The message's language follows the text we found: a participant whose language has no
    # translation of this topic reads the whole email in the topic's language.
    return TopicEmail(
        program_name=program.name,
        from_address=program.from_address,
        recipient=recipient,
        partners=partners,
        language=text.language,
        default_language=program.default_language,
        round_name=round_name,
        topic_order=order,
        topic_title=text.title,
        topic_markdown=text.body,
        idempotency_key=key,
        message_id=message_id,
        reply_address=address_for(program.reply_address, reply_key),
        unsubscribe_address=address_for(program.reply_address, f"unsubscribe-{reply_key}"),
        unsubscribe_url=url,
        log_address=address_for(program.reply_address, "log"),
    )


def preview(
    engine: Engine,
    *,
    settings: Settings,
    composer: Composer,
    secret: bytes,
    email: str,
    order: int,
    round_name: str | None,
    now: datetime,
) -> Message:
    """Topic ``order`` as ``email`` would receive it (``rapport preview topic``); sends nothing."""

    participants = PARTICIPANTS
    members = MEMBERSHIPS
    rounds = ROUNDS
    topics = TOPICS
    texts = TOPIC_TEXTS
    with engine.connect() as connection:
        person = connection.execute(
            select(participants).where(participants.c.email == email.strip().lower())
        ).first()
        if person is None:
            raise NotFound(f"participant {email}: not found")
        query = (
            select(members.c.partnership_id, rounds.c.id, rounds.c.name)
            .join(rounds, rounds.c.id == members.c.round_id)
            .where(members.c.participant_id == person.id)
            .order_by(rounds.c.start.desc())
        )
        if round_name:
            query = query.where(rounds.c.name == round_name)
        membership = connection.execute(query).first()
        if membership is None:
            where = f"round {round_name}" if round_name else "any round"
            raise NotFound(f"participant {email}: not in a partnership in {where}")
        partnership_id, round_id, name = membership
        topic = connection.execute(
            select(topics).where(topics.c.round_id == round_id, topics.c.seq == order)
        ).first()
        if topic is None:
            raise NotFound(f"round {name}: no topic {order}")
        text_rows = {
            (t.topic_id, t.language): t
            for t in connection.execute(select(texts).where(texts.c.topic_id == topic.id))
        }
        partner_rows = connection.execute(
            select(participants)
            .join(members, members.c.participant_id == participants.c.id)
            .where(members.c.partnership_id == partnership_id, participants.c.id != person.id)
            .order_by(members.c.position)
        ).all()
        blocked = _blocked(connection, {p.email for p in partner_rows})
    text = pick_text(text_rows, topic.id, person.language, settings.program.default_language)
    if text is None:
        raise NotFound(f"round {name}: topic {order} has no text")
    key = topic_key(name, order, person.id)
    context = topic_email(
        settings,
        key,
        reply_key(secret, key),
        _person(person),
        tuple(_person(p, blocked) for p in partner_rows),
        order,
        text,
        name,
        message_id(secret, key, settings.program.from_address.rpartition("@")[2]),
    )
    return composer.topic(context, now=now)
