"""docs/configuration.rst cannot drift from the embedded default: its key reference is what
scripts/gen_config_doc.py makes of src/stationd/default.ini, every section and key is in it
with its default, and it documents no key the configuration lacks."""

import configparser
import importlib.util
import os
import re

from stationd import config

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
DOC = os.path.join(ROOT, "docs", "configuration.rst")


def generator():
    spec = importlib.util.spec_from_file_location("gen_config_doc", os.path.join(ROOT, "scripts", "gen_config_doc.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_sections():
    """{section: the reference's text for it} from the doc as it is."""
    gen = generator()
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    begin, end = doc.index(gen.REFERENCE_BEGIN), doc.index(gen.REFERENCE_END)
    parts = re.split(r"^``\[([^\]]+)\]``\n~+\n", doc[begin:end], flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_reference_is_what_the_generator_makes_of_default_ini(capsys):
    assert generator().main(["--check"]) == 0, capsys.readouterr().err


def test_every_section_and_key_of_default_ini_is_documented_with_its_default():
    defaults = configparser.ConfigParser(interpolation=None, default_section="\0")
    defaults.read_string(config.default_text())
    sections = reference_sections()
    for section in defaults.sections():
        assert section in sections, f"[{section}] is not in docs/configuration.rst"
        for key, value in defaults.items(section):
            documented = f"``{key} = {value}``" if value else f"``{key} =`` (empty)"
            assert documented in sections[section], f"[{section}] {key} = {value} is not documented"


def test_no_key_is_documented_that_the_configuration_lacks():
    defaults = configparser.ConfigParser(interpolation=None, default_section="\0")
    defaults.read_string(config.default_text())
    declared = {"export:NAME": set(config.EXPORT), "sensor:NAME": set(config.SENSOR)}
    for section, text in reference_sections().items():
        keys = set(re.findall(r"``(\w+)(?: =|`` \(required\))", text))
        known = declared.get(section) or set(defaults[section])
        assert keys and keys <= known, f"[{section}]: {sorted(keys - known)} documented, not in the configuration"
    assert set(declared) <= set(reference_sections())


def test_the_prose_describes_every_section():
    with open(DOC, encoding="utf-8") as f:
        prose = f.read().split(generator().REFERENCE_BEGIN)[0]
    described = set(re.findall(r"^``\[([^\]]+)\]``$", prose, flags=re.MULTILINE))
    assert described == set(config.SCHEMA) | {"export:NAME", "sensor:NAME"}


def test_the_generator_puts_a_changed_default_in_the_doc():
    gen = generator()
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    changed = config.default_text().replace("max_body_size = 16MiB", "max_body_size = 32MiB")
    new = gen.rewrite(doc, changed)
    assert "``max_body_size = 32MiB``" in new and "``max_body_size = 16MiB``" not in new
    assert gen.rewrite(new, config.default_text()) == doc
    without = doc.split(gen.REFERENCE_BEGIN)[0].rstrip("\n") + "\n"
    assert gen.rewrite(without, config.default_text()) == doc  # no markers yet: added at the end
