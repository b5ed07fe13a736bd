"""Reading and checking CSV input: a UTF-8 file read whole, its rows checked field by field.

:class:`CsvFile` reads a CSV file with a header row and notes every problem it finds (file,
line, column, field) instead of stopping at the first; :meth:`CsvFile.finish` raises
:class:`InputError` with all of them.  The ``check_*`` functions take a field's text and return
its normalized value or raise :class:`Invalid`, whose message the reader places on the line and
column; they are shared with the topic importer, which also reads its files with
:func:`read_text`.

Line numbers are physical lines of the file (1-based), the first line of a record when a quoted
field spans several; columns are 1-based CSV column numbers.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TypeVar
from zoneinfo import available_timezones

import pycountry
from email_validator import EmailNotValidError, validate_email

from program.errors import InputError, Problem

__all__ = [
    "CsvFile",
    "Invalid",
    "Row",
    "check_country",
    "check_email",
    "check_language",
    "check_zone",
    "read_text",
    "text_up_to",
]

T = TypeVar("T")
_LANGUAGE = re.compile(r"([A-Za-z]{2,3})((?:[-_][A-Za-z0-9]{1,8})*)")
_MAX_ENCODING_PROBLEMS = 20
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")


class Invalid(ValueError):
    """A value that does not fit its field; the importer adds the file, line and column."""


# -- checks shared by the CSV and topic importers --------------------------------------------


@cache
def _countries() -> frozenset[str]:
    # XK (Kosovo) is not in ISO 3166-1 yet but is the code everyone, the EU included, uses.
    return frozenset(country.alpha_2 for country in pycountry.countries) | {"XK"}


# The bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).  A name in
# Arabic or Hebrew needs none of them (the bidi algorithm orders it; the marks U+200E/U+200F stay
# allowed), but they can make a name in a report or on a terminal read as something else.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def control_character(text: str) -> str | None:
    """A description of the first control character in ``text`` (CR, LF, NUL, TAB, DEL, the C1
    controls, the Unicode line and paragraph separators, the text-direction controls), or None.
    Such characters could end a mail header early, garble a line or disguise a name, so no
    field that can reach an email may hold one."""
    for char in text:
        if char in "\r\n":
            return "a line break"
        if char == "\0":
            return "a NUL character"
        if unicodedata.category(char) == "Cc" or char in "\u2028\u2029":
            return f"a control character (U+{ord(char):04X})"
        if char in BIDI_CONTROLS:
            return f"a text-direction control (U+{ord(char):04X})"
    return None


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


def text_up_to(limit: int) -> Callable[[str], str]:
    """A check for free text of at most ``limit`` characters, returned as it is."""

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
class Row:
    """One data record: its first line in the file and its values by column name, trimmed."""

    line: int
    values: dict[str, str]
    bad: set[str]  # columns whose raw value was already reported (a line break, a NUL)


_CSV_ERRORS = (  # the csv module's messages, by their start, in words a spreadsheet user knows
    ("unexpected end of data", "a quoted field is never closed (a missing closing quote)"),
    ("',' expected after '\"'", 'unexpected text after a closing quote (write "" for a quote)'),
    ("new-line character seen in unquoted field", "a carriage return (CR) inside a field"),
    ("field larger than field limit", "a field is too long"),
)


class CsvFile:
    """A CSV file read and checked row by row; problems pile up until :meth:`finish`."""

    def __init__(self, path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        self.file = str(path)
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.columns: dict[str, int] = {}
        self.rows: list[Row] = []
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
        row = Row(line, dict(zip(self.columns, (v.strip() for v in values), strict=True)), set())
        if control_character(joined):
            for name, number in self.columns.items():
                found = control_character(values[number - 1])
                if found:
                    self.error(line, name, f"contains {found}")
                    row.bad.add(name)
        self.rows.append(row)

    def error(self, line: int | None, name: str | None, message: str) -> None:
        self.errors.append(Problem(self.file, line, self.columns.get(name or ""), name, message))

    def warn(self, line: int | None, name: str | None, message: str) -> None:
        self.warnings.append(Problem(self.file, line, self.columns.get(name or ""), name, message))

    def get(
        self, row: Row, name: str, check: Callable[[str], T], *, required: bool = True
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

    def unique(self, row: Row, name: str, key: str, seen: dict[str, int]) -> bool:
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
