"""Concern phrases: found at a word's start, whatever the case, accents or apostrophes."""

from __future__ import annotations

import pytest

from monitor.concern import BUILT_IN, Phrases, find_concern

BUILT = Phrases.of()


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("I feel uncomfortable with his messages.", "uncomfortable"),
        ("This is HARASSMENT, plain and simple", "harass"),
        ("Je me sens mal à l\u2019aise avec lui.", "mal à l'aise"),
        ("je me sens mal a l'aise", "mal à l'aise"),
        ("Me siento incómoda con los mensajes de mi compañero.", "incómod"),
        ("me siento INCOMODA", "incómod"),
        ("Sus comentarios son inapropiados", "inapropiad"),
        ("Il me harcèle depuis une semaine", "harcèle"),
        ("He threatened   to report me", "threaten"),
    ],
)
def test_built_in_phrases_are_found(text: str, phrase: str) -> None:
    assert find_concern(text, BUILT) == phrase


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "We had a lovely talk about cataloguing; very comfortable.",
        "The chair was comfortable",
        "Thank you for the topic!",
        "unharassed",  # only at the start of a word
    ],
)
def test_ordinary_mail_raises_no_concern(text: str) -> None:
    assert find_concern(text, BUILT) is None


def test_extra_phrases_from_the_config_are_added() -> None:
    phrases = Phrases.of(("desconfortável", "  ", "Bedrängt"))
    assert find_concern("Fiquei desconfortavel com isso", phrases) == "desconfortável"
    assert find_concern("ich fühle mich bedrängt", phrases) == "Bedrängt"
    assert find_concern("uncomfortable", phrases) == "uncomfortable"
    assert set(BUILT_IN) <= set(phrases.phrases)


def test_the_longest_phrase_wins() -> None:
    phrases = Phrases.of(("mal",))
    assert find_concern("je suis mal à l'aise", phrases) == "mal à l'aise"
