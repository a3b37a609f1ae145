"""The fplane configuration: which instrument unit sits in which focal-plane slot.

Structured form (what is stored, one per version)::

    {"units": [{"ifuslot": "013", "x": -350.0, "y": 250.0, "specid": 20,
                "specslot": 65, "ifuid": "031", "ifurot": 0.0, "platesc": 1.0,
                "type": "VIRUS", "active": true, "actual": {"x": -350.2, "y": 250.1}}]}

Text form (what FPlaneServer served and its users' scripts read): comment
lines, then ``IFUSLOT X_FP Y_FP SPECID SPECSLOT IFUID IFUROT PLATESC``, one
line per slot.  With every slot (``full=True``) the unused ones (an empty
slot: specid 0, ifuid "000"; or an inactive unit) are commented out;
without, only active VIRUS units are listed.  What the columns cannot say
(unit type, active flag, the other of nominal and measured position) rides
in one ``# stationd-units:`` JSON comment line, which other parsers skip,
so ``parse(render(x)) == x``.
"""

import json
import math

TYPES = ("VIRUS", "LRS", "HRS", "HPF")
FIELDS = ("ifuslot", "x", "y", "specid", "specslot", "ifuid", "ifurot", "platesc")
HEADER = "##IFUSLOT X_FP     Y_FP     SPECID SPECSLOT IFUID IFUROT   PLATESC"
_EXTRA = "# stationd-units: "


def default_slots():
    """The HET focal plane's slots: rows 01-10, columns 1-9 ("011" ... "109")."""
    return [f"{row:02d}{column}" for row in range(1, 11) for column in range(1, 10)]


class ConfigInvalid(ValueError):
    """The configuration is refused; ``problems`` lists each offending entry."""

    def __init__(self, problems):
        super().__init__("; ".join(p["problem"] for p in problems))
        self.problems = problems


def _number(value):
    # Finite only: an infinity would render as "inf", which no fplane reader takes for a position;
    # an integer only as large as a float can be (it is stored as one).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a double
        return False


def validate(config, slots):
    """The config in canonical form (units sorted by slot, numbers as floats),
    or ConfigInvalid naming every offending unit."""
    if not isinstance(config, dict) or not isinstance(config.get("units"), list):
        raise ConfigInvalid([{"problem": 'the config must be an object with a "units" list'}])
    problems, units, slots_seen, ifus_seen = [], [], {}, {}
    known = set(slots)
    for index, unit in enumerate(config["units"]):
        def refuse(problem):
            problems.append({"index": index, "ifuslot": unit.get("ifuslot") if isinstance(unit, dict) else None,
                             "problem": f"unit {index}: {problem}"})

        if not isinstance(unit, dict):
            refuse("not an object")
            continue
        missing = [f for f in FIELDS if f not in unit]
        if missing:
            refuse(f"missing {', '.join(missing)}")
            continue
        unknown = set(unit) - set(FIELDS) - {"type", "active", "actual"}
        if unknown:
            refuse(f"unknown fields {', '.join(sorted(unknown))}")
            continue
        slot, ifuid = unit["ifuslot"], unit["ifuid"]
        if not isinstance(slot, str) or slot not in known:
            refuse(f"unknown slot {slot!r}")
            continue
        if not isinstance(ifuid, str) or not ifuid or any(c.isspace() or c == "#" for c in ifuid):
            refuse(f"ifuid {ifuid!r} must be text without spaces")
            continue
        bad = [f for f in ("x", "y", "ifurot", "platesc") if not _number(unit[f])]
        bad += [f for f in ("specid", "specslot") if isinstance(unit[f], bool) or not isinstance(unit[f], int)
                or unit[f] < 0]
        kind, active, actual = unit.get("type", "VIRUS"), unit.get("active", True), unit.get("actual")
        if kind not in TYPES:
            bad.append(f"type (one of {', '.join(TYPES)})")
        if not isinstance(active, bool):
            bad.append("active (true or false)")
        if actual is not None and not (isinstance(actual, dict) and set(actual) == {"x", "y"}
                                       and _number(actual["x"]) and _number(actual["y"])):
            bad.append('actual ({"x": number, "y": number})')
        if bad:
            refuse(f"bad {', '.join(bad)}")
            continue
        if slot in slots_seen:
            refuse(f"slot {slot} is also unit {slots_seen[slot]}")
            continue
        slots_seen[slot] = index
        empty = unit["specid"] == 0 and ifuid == "000"
        if not empty and ifuid in ifus_seen:
            refuse(f"duplicate IFU id {ifuid} (also unit {ifus_seen[ifuid]})")
            continue
        ifus_seen.setdefault(ifuid, index)
        canonical = {f: unit[f] for f in FIELDS}
        for field in ("x", "y", "ifurot", "platesc"):
            canonical[field] = float(unit[field])
        canonical.update(type=kind, active=active)
        if actual is not None:
            canonical["actual"] = {"x": float(actual["x"]), "y": float(actual["y"])}
        units.append(canonical)
    if problems:
        raise ConfigInvalid(problems)
    return {"units": sorted(units, key=lambda u: u["ifuslot"])}


def _used(unit):
    return unit["active"] and not (unit["specid"] == 0 and unit["ifuid"] == "000")


def render(config, full=True, actual=False, header=()):
    """The text file of a validated config."""
    lines = [f"# {line}" for line in header] + [HEADER]
    extra = {}
    for unit in config["units"]:
        x, y = unit["x"], unit["y"]
        note = {}
        if unit["type"] != _type_of(unit["ifuid"]):
            note["type"] = unit["type"]
        if not unit["active"]:
            note["active"] = False
        if unit.get("actual"):
            if actual:
                x, y = unit["actual"]["x"], unit["actual"]["y"]
                note["nominal"] = {"x": unit["x"], "y": unit["y"]}
            else:
                note["actual"] = unit["actual"]
        used = _used(unit)
        if not full and not (used and unit["type"] == "VIRUS"):
            continue
        line = (f"{unit['ifuslot']:<8} {x!r:<8} {y!r:<8} {unit['specid']:03d}    {unit['specslot']:03d}"
                f"      {unit['ifuid']:<5} {unit['ifurot']!r:<8} {unit['platesc']!r}")
        lines.append(line if used else "#" + line)
        if note:
            extra[unit["ifuslot"]] = note
    if full and extra:
        lines.append(_EXTRA + json.dumps(extra, separators=(",", ":"), sort_keys=True))
    return "\n".join(lines) + "\n"


def _type_of(ifuid):
    for kind in ("LRS", "HRS", "HPF"):
        if ifuid.upper().startswith(kind):
            return kind
    return "VIRUS"


def parse(text, slots):
    """A validated config from a text file (ours, or FPlaneServer's).

    Commented-out slot lines are unused slots (or inactive units).  Without
    our JSON comment line a unit's type comes from its IFU id (LRS..., HRS...,
    HPF..., else VIRUS).
    """
    units, extra = [], {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith(_EXTRA.strip()):
            try:
                extra = json.loads(line[len(_EXTRA.strip()):])
            except ValueError:
                raise ConfigInvalid([{"line": number, "problem": f"line {number}: bad stationd-units JSON"}]) from None
            continue
        commented = line.startswith("#")
        fields = line.lstrip("#").split()
        if len(fields) != len(FIELDS) or not fields[0].isdigit():
            if commented or not line:
                continue  # a comment, the header
            raise ConfigInvalid([{"line": number, "problem": f"line {number}: expected {len(FIELDS)} columns"}])
        try:
            unit = {"ifuslot": fields[0], "x": float(fields[1]), "y": float(fields[2]),
                    "specid": int(fields[3]), "specslot": int(fields[4]), "ifuid": fields[5],
                    "ifurot": float(fields[6]), "platesc": float(fields[7])}
        except ValueError as e:
            raise ConfigInvalid([{"line": number, "problem": f"line {number}: {e}"}]) from None
        empty = unit["specid"] == 0 and unit["ifuid"] == "000"
        unit["type"] = _type_of(unit["ifuid"])
        unit["active"] = not commented or empty
        units.append(unit)
    for unit in units:
        note = extra.get(unit["ifuslot"], {})
        unit["type"] = note.get("type", unit["type"])
        unit["active"] = note.get("active", unit["active"])
        if "nominal" in note:
            unit["actual"] = {"x": unit["x"], "y": unit["y"]}
            unit["x"], unit["y"] = note["nominal"]["x"], note["nominal"]["y"]
        elif "actual" in note:
            unit["actual"] = note["actual"]
    return validate({"units": units}, slots)


def diff(old, new):
    """Per slot: what changed between two validated configs."""
    before = {u["ifuslot"]: u for u in old["units"]}
    after = {u["ifuslot"]: u for u in new["units"]}
    changes = []
    for slot in sorted(set(before) | set(after)):
        a, b = before.get(slot), after.get(slot)
        if a == b:
            continue
        if a is None or b is None:
            changes.append({"ifuslot": slot, "added" if a is None else "removed": b or a})
        else:
            changes.append({"ifuslot": slot, "changed": {k: [a.get(k), b.get(k)]
                                                         for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}})
    return changes
