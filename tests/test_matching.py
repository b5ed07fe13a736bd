"""Tests for program.matching: who is left alone, who may be paired, scores and reasons."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from program.matching import Group, Person, Proposal, interests, left_alone, score_pair, suggest

# 10 March 2027: Europe is on winter time (Paris +1), New Zealand on summer time (+13).
NOW = datetime(2027, 3, 10, 9, 0, tzinfo=UTC)


def person(pid: int, name: str, country: str, zone: str, **extra: str) -> Person:
    return Person(pid, f"{name.lower()}@example.org", name, country, zone, **extra)


ANN = person(
    1,
    "Ann",
    "FR",
    "Europe/Paris",
    sector="Academic",
    career_stage="mid career",
    interests="Cataloguing; open access",
)
BOB = person(2, "Bob", "NZ", "Pacific/Auckland", career_stage="early career", interests="clubs")
CHIARA = person(
    3,
    "Chiara",
    "IT",
    "Europe/Rome",
    sector="academic",
    career_stage="Mid  career",
    interests="open access, digitisation",
)
DEV = person(
    4,
    "Dev",
    "IN",
    "Asia/Kolkata",
    sector="academic",
    career_stage="early career",
    interests="cataloguing",
)
EMMA = person(5, "Emma", "FR", "Europe/Paris")
GUS = person(6, "Gus", "BR", "America/Sao_Paulo")
EVERYONE = {p.id: p for p in (ANN, BOB, CHIARA, DEV, EMMA, GUS)}


def with_status(people: dict[int, Person], **statuses: str) -> dict[int, Person]:
    changed = dict(people)
    for p in people.values():
        if p.name.lower() in statuses:
            changed[p.id] = Person(**{**p.__dict__, "status": statuses[p.name.lower()]})
    return changed


def pairs(proposals: tuple[Proposal, ...]) -> list[tuple[str, str, int]]:
    return [(p.a.name, p.b.name, p.score) for p in proposals]


def test_interests_are_split_and_normalized() -> None:
    """Interests split on commas and semicolons, case-folded, spaces collapsed, deduplicated."""
    assert interests(" Open  Access; cataloguing,open access ;; ") == ["open access", "cataloguing"]
    assert interests("") == []


def test_who_is_left_alone() -> None:
    """Alone: active, with a dissolved partnership and no active one, or only withdrawn partners."""
    groups = [
        Group(10, "dissolved", (1, 2)),  # Ann and Bob lost each other ...
        Group(11, "active", (2, 5)),  # ... Bob was re-matched with Emma
        Group(12, "active", (3, 4)),  # Chiara's partner Dev withdrew
        Group(13, "ended", (6, 1)),  # an ended partnership leaves no one to re-match
    ]
    people = with_status(EVERYONE, dev="withdrawn")
    assert left_alone(people, groups) == [1, 3]
    # A paused participant is not offered a partner; a triad with one withdrawal is still a pair.
    assert left_alone(with_status(people, ann="paused"), groups) == [3]
    triad = [Group(20, "active", (1, 3, 4))]
    assert left_alone(people, triad) == []
    # Someone never matched in the round is not "left" alone.
    assert left_alone(EVERYONE, []) == []


def test_score_and_reasons() -> None:
    """Same sector, same stage, shared interests and close zones add up, explained in words."""
    score, reasons = score_pair(ANN, CHIARA, NOW)
    assert score == 20 + 15 + 15 + 20
    assert reasons == (
        "both work in the academic sector",
        "both mid career",
        "shared interest: open access",
        "same time of day",
    )
    score, reasons = score_pair(ANN, DEV, NOW)
    assert score == 20 + 15 + 12  # Paris +1 and Kolkata +5:30 are 4.5 h apart
    assert reasons == (
        "both work in the academic sector",
        "shared interest: cataloguing",
        "4.5 h apart",
    )
    # Auckland (+13) and Paris (+1): 12 h either way round the clock, the farthest possible.
    assert score_pair(BOB, ANN, NOW) == (0, ("12 h apart",))
    # Auckland and Sao Paulo (-3): 16 h one way is 8 h the other.
    assert score_pair(BOB, GUS, NOW)[1] == ("8 h apart",)


def test_shared_interests_are_capped_at_three() -> None:
    """More than three shared interests score as three; all of them are named."""
    many = "a, b, c, d"
    x = person(1, "X", "FR", "UTC", interests=many)
    y = person(2, "Y", "DE", "Etc/GMT-12", interests=many)  # UTC+12
    score, reasons = score_pair(x, y, NOW)
    assert score == 45 + 0 and reasons[0] == "shared interests: a, b, c, d"


def test_greedy_pairs_best_first_across_borders_never_the_same_partner_again() -> None:
    """The best pair is taken first; same country and earlier partners are never proposed."""
    groups = [Group(1, "dissolved", (1, 2)), Group(2, "dissolved", (3, 4))]
    found = suggest(EVERYONE, groups, now=NOW)
    assert pairs(found.proposals) == [("Ann", "Chiara", 70), ("Bob", "Dev", 23)]
    assert found.unmatched == ()


def test_result_does_not_depend_on_input_order() -> None:
    """Shuffling people and partnerships gives the same proposals (ties go by email)."""
    twins = {
        p.id: p
        for p in (
            person(1, "A", "FR", "UTC"),
            person(2, "B", "DE", "UTC"),
            person(3, "C", "IT", "UTC"),
            person(4, "D", "ES", "UTC"),
        )
    }
    groups = [Group(1, "dissolved", (1, 2)), Group(2, "dissolved", (3, 4))]
    expected = pairs(suggest(twins, groups, now=NOW).proposals)
    assert expected == [("A", "C", 20), ("B", "D", 20)]
    rng = random.Random(7)
    for _ in range(10):
        items = list(twins.items())
        rng.shuffle(items)
        shuffled = list(groups)
        rng.shuffle(shuffled)
        assert pairs(suggest(dict(items), shuffled, now=NOW).proposals) == expected


def test_the_odd_one_out_is_reported_unmatched() -> None:
    """An odd one out, or someone with only compatriots left, is unmatched with the reason."""
    groups = [Group(1, "dissolved", (1, 2)), Group(2, "dissolved", (3, 6))]
    found = suggest(with_status(EVERYONE, bob="withdrawn"), groups, now=NOW)
    assert pairs(found.proposals) == [("Ann", "Chiara", 70)]
    assert [(p.name, why) for p, why in found.unmatched] == [
        ("Gus", "the others who could be their partner are already paired")
    ]
    alone = suggest(EVERYONE, [Group(1, "active", (1, 2)), Group(2, "dissolved", (5, 6))], now=NOW)
    assert alone.proposals == ()
    assert [p.name for p, _ in alone.unmatched] == ["Emma", "Gus"]
    assert {why for _, why in alone.unmatched} == {
        "everyone else left alone is from the same country or was already their partner"
    }
    single = suggest(EVERYONE, [Group(1, "active", (1, 2)), Group(2, "active", (5, 6))], now=NOW)
    assert single == suggest(EVERYONE, [], now=NOW)
    lone = suggest(with_status(EVERYONE, gus="withdrawn"), [Group(2, "active", (5, 6))], now=NOW)
    assert [(p.name, why) for p, why in lone.unmatched] == [
        ("Emma", "no one else is left alone in this round")
    ]


def test_same_country_is_never_proposed() -> None:
    """Two people left alone from one country are not paired, whatever their score."""
    ann2 = Person(**{**ANN.__dict__, "id": 7, "email": "ann2@example.org", "name": "Ann2"})
    people = {**EVERYONE, 7: ann2}
    found = suggest(people, [Group(1, "dissolved", (1, 7))], now=NOW)
    assert found.proposals == ()
    assert len(found.unmatched) == 2


def test_an_unknown_zone_scores_no_distance() -> None:
    """A zone the system does not know adds nothing and says nothing (no crash)."""
    odd = person(1, "Odd", "FR", "Mars/Olympus")
    assert score_pair(odd, BOB, NOW) == (0, ())
