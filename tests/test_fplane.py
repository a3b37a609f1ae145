"""The fplane text format and validation."""

import random

import pytest

from stationd import fplane

SLOTS = fplane.default_slots()


def unit(slot, ifuid, specid=20, **extra):
    return {"ifuslot": slot, "x": -350.0, "y": 250.0, "specid": specid, "specslot": 65, "ifuid": ifuid,
            "ifurot": 0.0, "platesc": 1.0, **extra}


def random_config(rng):
    units = []
    for n, slot in enumerate(rng.sample(SLOTS, 30)):
        if n % 7 == 0:
            units.append(dict(unit(slot, "000", specid=0), type="VIRUS", active=True))
            continue
        u = unit(slot, f"{n:03d}" if n % 5 else f"LRS{n}", specid=rng.randint(1, 99))
        u.update(x=round(rng.uniform(-600, 600), rng.randint(0, 4)), y=rng.uniform(-600, 600),
                 ifurot=rng.choice([0.0, 90.0, 180.0, 270.0]), platesc=1.0 + rng.random() / 100,
                 type=rng.choice(fplane.TYPES), active=rng.random() > 0.2)
        if rng.random() > 0.5:
            u["actual"] = {"x": u["x"] + rng.uniform(-1, 1), "y": u["y"] + rng.uniform(-1, 1)}
        units.append(u)
    return fplane.validate({"units": units}, SLOTS)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("actual", [False, True])
def test_parse_of_render_is_the_config(seed, actual):
    config = random_config(random.Random(seed))
    assert fplane.parse(fplane.render(config, full=True, actual=actual, header=["x"]), SLOTS) == config


def test_variants():
    config = fplane.validate({"units": [
        unit("013", "031", actual={"x": -350.25, "y": 250.5}),
        unit("014", "032", active=False),
        unit("015", "000", specid=0),
        unit("016", "LRS2", type="LRS"),
        unit("017", "HPF1", type="HPF"),
    ]}, SLOTS)
    full = fplane.render(config, full=True, header=["fplane version 1"]).splitlines()
    assert full[0] == "# fplane version 1"
    assert full[1].startswith("##IFUSLOT X_FP")
    data = full[2:7]
    assert data[0].split() == ["013", "-350.0", "250.0", "020", "065", "031", "0.0", "1.0"]
    assert data[1].startswith("#014") and data[2].startswith("#015")
    assert [line.split()[0] for line in data[3:]] == ["016", "017"]
    assert full[7].startswith("# stationd-units: ")
    short = fplane.render(config, full=False).splitlines()
    assert [line.split()[0] for line in short[1:]] == ["013"]  # active VIRUS units only
    measured = fplane.render(config, full=False, actual=True).splitlines()
    assert measured[1].split()[1:3] == ["-350.25", "250.5"]


def test_an_fplaneserver_file_is_read():
    text = """# fplane from FPlaneServer
##IFUSLOT X_FP   Y_FP   SPECID SPECSLOT IFUID IFUROT PLATESC
  013     -350.0 250.0  020    065      031   0.0    1.00
# 014     -250.0 250.0  000    000      000   0.0    1.00
  015     -150.0 250.0  021    066      LRS2B 0.0    1.00
"""
    config = fplane.parse(text, SLOTS)
    assert [(u["ifuslot"], u["type"], u["active"], u["specid"]) for u in config["units"]] == [
        ("013", "VIRUS", True, 20), ("014", "VIRUS", True, 0), ("015", "LRS", True, 21)]


def test_validation_names_every_offending_unit():
    with pytest.raises(fplane.ConfigInvalid) as refused:
        fplane.validate({"units": [
            unit("013", "031"), unit("999", "032"), unit("014", "031"), {"ifuslot": "015"},
            unit("016", "033", type="NIRSPEC"), unit("013", "034"), unit("017", "000", specid=0),
            unit("018", "000", specid=0), unit("019", "035", actual={"x": 1}), "nonsense",
        ]}, SLOTS)
    problems = {p["index"]: p["problem"] for p in refused.value.problems}
    assert sorted(problems) == [1, 2, 3, 4, 5, 8, 9]
    assert "unknown slot '999'" in problems[1]
    assert "duplicate IFU id 031" in problems[2]
    assert "missing x, y" in problems[3]
    assert "type" in problems[4] and "slot 013 is also unit 0" in problems[5]
    assert "actual" in problems[8] and "not an object" in problems[9]
    with pytest.raises(fplane.ConfigInvalid, match="units"):
        fplane.validate({"unit": []}, SLOTS)


def test_bad_text_is_refused_with_its_line():
    with pytest.raises(fplane.ConfigInvalid, match="line 2: expected 8 columns"):
        fplane.parse("##IFUSLOT\n013 1.0 2.0\n", SLOTS)
    with pytest.raises(fplane.ConfigInvalid, match="line 1"):
        fplane.parse("013 a 2.0 020 065 031 0.0 1.0\n", SLOTS)


def test_diff():
    old = fplane.validate({"units": [unit("013", "031"), unit("014", "032")]}, SLOTS)
    new = fplane.validate({"units": [unit("013", "031", specid=21), unit("015", "033")]}, SLOTS)
    assert fplane.diff(old, new) == [
        {"ifuslot": "013", "changed": {"specid": [20, 21]}},
        {"ifuslot": "014", "removed": old["units"][1]},
        {"ifuslot": "015", "added": new["units"][1]},
    ]
