"""Regenerate config.toml and README.md's configuration reference from program/settings.py.

Run `make docs` after adding or changing a setting; tests fail until you do.
"""

from __future__ import annotations

import re
from pathlib import Path

from program.config import example_config, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def main() -> None:
    (ROOT / "config.toml").write_text(example_config(), encoding="utf-8")
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = f"{START}\n{reference_markdown()}{END}"
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
