#!/usr/bin/env python3
"""Write the key reference of docs/configuration.rst from the embedded default configuration.

The part of the doc between the two marker comments (REFERENCE_BEGIN, REFERENCE_END)
is made from src/stationd/default.ini: every section, every key with its default
value and the comment above it there, so the reference is what ``stationd-admin
echo-config`` prints, and cannot drift from it; then the keys and defaults of the
sections a file may repeat ([export:NAME], [sensor:NAME]) as stationd.config declares
them.  The rest of the doc is prose, kept as it is.

    scripts/gen_config_doc.py          rewrite the reference in docs/configuration.rst
    scripts/gen_config_doc.py --check  exit 1 if it is not what default.ini gives

tests/test_config_doc.py runs the check.
"""

import argparse
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DEFAULT_INI = os.path.join(ROOT, "src", "stationd", "default.ini")
DOC = os.path.join(ROOT, "docs", "configuration.rst")
REFERENCE_BEGIN = (".. reference-begin: written by scripts/gen_config_doc.py from src/stationd/default.ini and "
                   "stationd.config; edit those, not this")
REFERENCE_END = ".. reference-end"


def parse(text):
    """[(section, [(keys_and_defaults, comment_lines)])] from an INI file, in its order: the
    comment lines right above a key (or above a run of keys with none between them) are
    that key's (those keys'); the file's opening comment, before any section, is left out."""
    sections = []
    comment, entries, last_key = [], None, False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            last_key = False
            continue
        if stripped.startswith(("#", ";")):
            comment.append(stripped[1:].strip())
            last_key = False
            continue
        match = re.match(r"^\[([^\]]+)\]$", stripped)
        if match:
            entries = []
            sections.append((match.group(1), entries))
            comment, last_key = [], False
            continue
        if line[:1].isspace() and last_key:  # a continuation line of a multi-line value
            key, value = entries[-1][0][-1]
            entries[-1][0][-1] = (key, f"{value}\n{stripped}")
            continue
        key, sep, value = line.partition("=")
        if not sep or entries is None:
            raise ValueError(f"{DEFAULT_INI}: cannot read line {line!r}")
        if comment or not entries:
            entries.append(([], comment))
        entries[-1][0].append((key.strip(), value.strip()))
        comment, last_key = [], True
    return sections


def _inline(text):
    """A comment's words as reStructuredText: `code` as ``code``, markup characters escaped."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`"):
            out.append(f"``{part[1:-1]}``")
        else:
            out.append(re.sub(r"[*|\\]|(?<=\w)_(?=\W|$)", lambda m: "\\" + m.group(0), part))
    return "".join(out)


def _default(key, value):
    if not value:
        return f"``{key} =`` (empty)"
    if "\n" in value:
        return f"``{key} =`` " + " ".join(f"``{line}``" for line in value.splitlines()) + " (one a line)"
    return f"``{key} = {value}``"


def reference(text):
    """The reference part of the doc (markers included) for default.ini's ``text``."""
    out = [REFERENCE_BEGIN, "", "Every key and its default", "-------------------------", "",
           "Every section and key of the embedded default, with its default value and the",
           "comment ``stationd-admin echo-config`` prints above it.  ``[sensor:system]`` is one",
           "sensor among those a file may add; ``[export:NAME]`` and ``[sensor:NAME]``, last,",
           "have the keys and defaults that ``stationd.config`` declares for them.", ""]
    for section, entries in parse(text):
        title = f"``[{section}]``"
        out += [title, "~" * len(title), ""]
        for keys, comment in entries:
            out.append(", ".join(_default(key, value) for key, value in keys))
            words = _inline(" ".join(comment)) if comment else "(As above.)"
            out += ["    " + line for line in _wrap(words, 80)]
            out.append("")
    out += _repeated()
    out.append(REFERENCE_END)
    return "\n".join(out) + "\n"


def _repeated():
    """The sections a file may have any number of, which the embedded default has none
    (or one) of: their keys and defaults as stationd.config declares them."""
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from stationd import config

    out = []
    for title, keys, defaults, what in (
            ("``[export:NAME]``", config.EXPORT, config.EXPORT_DEFAULTS,
             "One upstream target each (docs/replication.rst):"),
            ("``[sensor:NAME]``", config.SENSOR, config.SENSOR_DEFAULTS,
             "One polled sensor each (docs/sensors.rst); beside these, the keys of its driver:")):
        out += [title, "~" * len(title), "", what, ""]
        out += [f"- ``{key}`` (required)" if key not in defaults else f"- {_default(key, defaults[key])}"
                for key in keys]
        out.append("")
    return out


def _wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def rewrite(doc, text):
    """``doc`` with its reference part replaced by the one ``text`` gives (added at the end
    if the doc has no markers yet)."""
    begin, end = doc.find(REFERENCE_BEGIN), doc.find(REFERENCE_END)
    if begin < 0 or end < begin:
        return doc.rstrip("\n") + "\n\n" + reference(text)
    rest = doc[end + len(REFERENCE_END):].lstrip("\n")
    return doc[:begin] + reference(text) + ("\n" + rest if rest else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the doc is not up to date")
    args = parser.parse_args(argv)
    with open(DEFAULT_INI, encoding="utf-8") as f:
        text = f.read()
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    new = rewrite(doc, text)
    if args.check:
        if new != doc:
            print(f"{os.path.relpath(DOC)} is not what {os.path.relpath(DEFAULT_INI)} gives: "
                  "run scripts/gen_config_doc.py", file=sys.stderr)
            return 1
        return 0
    if new != doc:
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"{os.path.relpath(DOC)}: reference rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
