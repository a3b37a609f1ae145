"""Safe decoding of HiSPARC uploads: real station pickles, hostile pickles, JSON."""

import base64
import datetime
import json
import os
import pickle
import pickletools
import subprocess
import sys
import warnings

import numpy as np
import pytest

from stationd import hisparc, jsoncodec
from stationd.hisparc import DecodeError, decode_upload, events_from_payload, unpickle

UTC = datetime.timezone.utc


def epoch_ns(dt, ns):
    """The expected time_ns, computed independently with integer arithmetic."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.replace(microsecond=0).timestamp()) * 10**9 + ns


def event(dt, ns, datalist, kind="CIC"):
    return {
        "header": {"eventtype_uploadcode": kind, "datetime": dt, "nanoseconds": ns,
                   "date": dt.date(), "time": dt.time()},
        "datalist": [{"data_uploadcode": code, "data": value} for code, value in datalist],
    }


def numpy_loads(data):
    """numpy's own reading of a (trusted, test-built) pickle, as plain values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = pickle.loads(data, encoding="latin1")
    return value.item() if isinstance(value, np.generic) else value


# -- Python 3 stations: protocol 2+ with numpy scalars and datetimes ---------

DT = datetime.datetime(2024, 5, 1, 12, 34, 56, 789012)


def py3_batch():
    return [
        event(DT, 123456789, [
            ("TR1", np.int64(-(2**62) - 3)),
            ("PH1", np.float32(1.25)),
            ("TRIG", np.bool_(True)),
            ("NP1", np.uint16(65535)),
            ("NP2", np.dtype(">i4").type(-7)),
            ("INT8", np.int8(-128)),
            ("F64", np.float64(0.1)),
            ("F16", np.float16(0.5)),
            ("U64", np.uint64(2**64 - 1)),
            ("TRACE1", b"\x00\xff\xe9raw"),
            ("SPAN", (np.int32(1), [np.float64(2.5), b"x"])),
        ]),
        event(datetime.datetime(2024, 5, 1, 12, 34, 57), 0, [("TR1", 1)], kind="ERR"),
    ]


def check_py3(events):
    assert len(events) == 2
    first, second = events
    assert first["type"] == "CIC"
    assert first["time_ns"] == epoch_ns(DT, 123456789) == 1714566896123456789
    data = first["data"]
    expected = {
        "TR1": -(2**62) - 3, "PH1": 1.25, "TRIG": True, "NP1": 65535, "NP2": -7, "INT8": -128,
        "F64": 0.1, "F16": 0.5, "U64": 2**64 - 1, "TRACE1": "\x00\xff\xe9raw", "SPAN": [1, [2.5, "x"]],
    }
    assert data == expected
    for key, value in expected.items():
        assert type(data[key]) is type(value), key  # plain Python, not numpy
    assert second == {"type": "ERR", "time_ns": 1714566897 * 10**9, "data": {"TR1": 1}}
    json.dumps(events)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_pickle_with_numpy(protocol):
    data = pickle.dumps(py3_batch(), protocol=protocol)
    assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data  # numpy 2 / 1
    check_py3(decode_upload(data))


def to_numpy1(data):
    """Rewrite numpy 2's numpy._core.multiarray to numpy 1's numpy.core.multiarray."""
    old, new = b"numpy._core.multiarray", b"numpy.core.multiarray"
    if data[1] < 4:  # GLOBAL: newline-terminated, no length prefix
        return data.replace(b"c" + old + b"\n", b"c" + new + b"\n")
    # SHORT_BINUNICODE has a length byte; optimize() rebuilds the frames.
    data = data.replace(b"\x8c" + bytes([len(old)]) + old, b"\x8c" + bytes([len(new)]) + new)
    return pickletools.optimize(data)


@pytest.mark.parametrize("protocol", [2, 5])
def test_numpy1_module_name(protocol):
    data = to_numpy1(pickle.dumps(py3_batch(), protocol=protocol))
    assert b"numpy._core" not in data and b"numpy.core.multiarray" in data
    assert numpy_loads(data)[0]["datalist"][0]["data"] == -(2**62) - 3  # still a valid pickle
    check_py3(decode_upload(data))


def py2_scalar(dtype, order, raw, module="numpy.core.multiarray"):
    """A numpy scalar as numpy 1 under Python 2 pickled it (protocol 0)."""
    return (f"c{module}\nscalar\np0\n(cnumpy\ndtype\np1\n(S'{dtype}'\np2\nI0\nI1\ntp3\nRp4\n"
            f"(I3\nS'{order}'\np5\nNNNI-1\nI-1\nI0\ntp6\nb{py2_str(raw)}p7\ntp8\nRp9\n.").encode()


@pytest.mark.parametrize("dtype, order, raw, value", [
    ("i4", ">", b"\xff\xff\xff\xf9", -7),
    ("i4", "<", b"\xf9\xff\xff\xff", -7),
    ("u2", ">", b"\x01\x02", 258),
    ("i8", ">", b"\x00\x00\x00\x01\x00\x00\x00\x00", 2**32),
    ("f8", ">", b"\x3f\xf8\x00\x00\x00\x00\x00\x00", 1.5),
    ("f4", "<", b"\x00\x00\xc0\x3f", 1.5),
    ("f2", ">", b"\x3c\x00", 1.0),
    ("b1", "|", b"\x01", True),
    ("u1", "|", b"\xff", 255),
])
def test_numpy_scalar_byte_orders(dtype, order, raw, value):
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        data = py2_scalar(dtype, order, raw, module)
        assert numpy_loads(data) == value  # numpy agrees on the meaning
        result = unpickle(data)
        assert result == value and type(result) is type(value)


def test_big_endian_at_protocol_2():
    # numpy scalars are native-endian, so flip one by hand: state '<' -> '>', raw bytes swapped.
    # (The raw bytes travel as latin-1 text in BINUNICODE, i.e. UTF-8: keep them ASCII.)
    data = pickle.dumps(np.int32(0x01020304), protocol=2)
    data = data.replace(b"X\x01\x00\x00\x00<", b"X\x01\x00\x00\x00>")
    data = data.replace(b"X\x04\x00\x00\x00\x04\x03\x02\x01", b"X\x04\x00\x00\x00\x01\x02\x03\x04")
    assert numpy_loads(data) == 0x01020304
    assert unpickle(data) == 0x01020304


def test_decoder_never_imports_numpy(tmp_path):
    path = tmp_path / "upload.pickle"
    path.write_bytes(pickle.dumps(py3_batch(), protocol=2))
    code = (
        "import json, sys\n"
        "from stationd.hisparc import decode_upload\n"
        f"events = decode_upload(open({str(path)!r}, 'rb').read())\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'numpy'], 'numpy imported'\n"
        "print(json.dumps(events))\n"
    )
    src = os.path.dirname(os.path.dirname(hisparc.__file__))
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == decode_upload(path.read_bytes())


# -- Python 2 stations: protocol 0 with byte strings -------------------------

def py2_str(raw):
    """A Python 2 str as protocol 0 writes it: S'...' with escapes."""
    body = "".join(chr(b) if 32 <= b < 127 and b not in b"\\'" else f"\\x{b:02x}" for b in raw)
    return f"S'{body}'\n"


def py2_datetime_state(dt):
    """datetime's 10-byte pickle state: year hi, lo, month, day, h, m, s, microsecond (3 bytes)."""
    us = dt.microsecond
    return bytes([dt.year >> 8, dt.year & 255, dt.month, dt.day, dt.hour, dt.minute, dt.second,
                  us >> 16, (us >> 8) & 255, us & 255])


class Py2Pickler:
    """Writes protocol 0 the way a Python 2 HiSPARC station's pickle.dumps(obj) did."""

    def __init__(self):
        self.memo = 0
        self.out = []

    def put(self):
        self.out.append(f"p{self.memo}\n")
        self.memo += 1

    def dump(self, obj):
        if obj is None:
            self.out.append("N")
        elif obj is True or obj is False:
            self.out.append("I01\n" if obj else "I00\n")
        elif isinstance(obj, int):
            self.out.append(f"I{obj}\n" if -(2**31) <= obj < 2**31 else f"L{obj}L\n")
        elif isinstance(obj, float):
            self.out.append(f"F{obj!r}\n")
        elif isinstance(obj, bytes):  # a py2 str
            self.out.append(py2_str(obj))
            self.put()
        elif isinstance(obj, str):  # a py2 unicode
            self.out.append("V" + obj.encode("raw-unicode-escape").decode("latin-1") + "\n")
            self.put()
        elif isinstance(obj, datetime.datetime):
            self.out.append("cdatetime\ndatetime\n")
            self.put()
            self.out.append("(" + py2_str(py2_datetime_state(obj)))
            self.put()
            self.out.append("tR")
            self.put()
        elif isinstance(obj, list):
            self.out.append("(l")
            self.put()
            for item in obj:
                self.dump(item)
                self.out.append("a")
        elif isinstance(obj, dict):
            self.out.append("(d")
            self.put()
            for key, value in obj.items():
                self.dump(key)
                self.dump(value)
                self.out.append("s")
        else:
            raise TypeError(obj)

    def dumps(self, obj):
        self.dump(obj)
        return ("".join(self.out) + ".").encode("latin-1")


def py2_event(dt, ns, datalist):
    return {b"header": {b"eventtype_uploadcode": b"CIC", b"datetime": dt, b"nanoseconds": ns},
            b"datalist": [{b"data_uploadcode": code, b"data": value} for code, value in datalist]}


def test_python2_pickle_literal():
    # 2024-05-01 12:34:56.000789 with latin-1 text, as a Python 2 station sends it.
    data = (
        b"(lp0\n(dp1\nS'header'\np2\n(dp3\nS'eventtype_uploadcode'\np4\nS'CIC'\np5\n"
        b"sS'datetime'\np6\ncdatetime\ndatetime\np7\n(S'\\x07\\xe8\\x05\\x01\\x0c\\x22\\x38\\x00\\x03\\x15'\n"
        b"p8\ntp9\nRp10\nsS'nanoseconds'\np11\nI987654321\nssS'datalist'\np12\n(lp13\n(dp14\n"
        b"S'data_uploadcode'\np15\nS'SITE'\np16\nsS'data'\np17\nS'Caf\\xe9 Z\\xfcrich'\np18\nsasa.")
    assert numpy_loads(data)[0]["header"]["datetime"] == datetime.datetime(2024, 5, 1, 12, 34, 56, 789)
    assert decode_upload(data) == [{
        "type": "CIC", "time_ns": 1714566896987654321, "data": {"SITE": "Café Zürich"}}]


def test_python2_pickle_generated():
    dt = datetime.datetime(2011, 12, 31, 23, 59, 59, 999999)
    batch = [py2_event(dt, 999999999, [
        (b"TR1", b"\xe9t\xe9 \x00\xff'\\"), (b"PH1", 1234), (b"PH1", 1235), (b"PH1", 1236),
        (b"BIG", 2**40), (b"FLT", 0.1), (b"OK", True), (b"NONE", None), (b"TXT", "\u20ac uni"),
        (b"NEST", [1, {b"k": b"v"}, [b"\xb5"]]), (b"WHEN", dt),
    ])]
    data = Py2Pickler().dumps(batch)
    assert data.startswith(b"(lp0\n(dp1\nS'header'\np2\n(dp3\nS'eventtype_uploadcode'\n")
    trusted = pickle.loads(data, encoding="latin1")  # what the old server read
    assert trusted[0]["header"] == {"eventtype_uploadcode": "CIC", "datetime": dt, "nanoseconds": 999999999}
    assert trusted[0]["datalist"][0]["data"] == "\xe9t\xe9 \x00\xff'\\"
    [result] = decode_upload(data)
    assert result["time_ns"] == 1325375999_999999999
    assert result["data"] == {
        "TR1": "été \x00ÿ'\\", "PH1": [1234, 1235, 1236], "BIG": 2**40, "FLT": 0.1, "OK": True,
        "NONE": None, "TXT": "€ uni", "NEST": [1, {"k": "v"}, ["µ"]], "WHEN": "2011-12-31T23:59:59.999999",
    }


def test_python3_bytes_keys_and_empty_bytes():
    batch = [{b"header": {b"eventtype_uploadcode": b"CIC", b"datetime": DT, b"nanoseconds": 5},
              b"datalist": [{b"data_uploadcode": b"E", b"data": b""}]}]
    for protocol in (0, 2, 5):
        assert decode_upload(pickle.dumps(batch, protocol=protocol)) == [
            {"type": "CIC", "time_ns": epoch_ns(DT, 5), "data": {"E": ""}}]


def test_aware_datetime_converted_to_utc():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    dt = datetime.datetime(2024, 5, 1, 14, 34, 56, 500000, tzinfo=tz)
    for protocol in (0, 2, 5):
        [result] = decode_upload(pickle.dumps([event(dt, 1, [])], protocol=protocol))
        assert result["time_ns"] == 1714566896 * 10**9 + 1


# -- hostile pickles ---------------------------------------------------------

@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload ran code"


class Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def hostile(path):
    cmd = f"touch {path}"
    return {
        "os.system": f"cos\nsystem\n(S'{cmd}'\ntR.".encode(),
        "posix.system": f"cposix\nsystem\n(S'{cmd}'\ntR.".encode(),
        "INST os.system": f"(S'{cmd}'\nios\nsystem\n.".encode(),
        "builtins.eval": f"cbuiltins\neval\n(V__import__('os').system('{cmd}')\ntR.".encode(),
        "__builtin__.eval": f"c__builtin__\neval\n(V__import__('os').system('{cmd}')\ntR.".encode(),
        "subprocess.check_call": f"csubprocess\ncheck_call\n((Vtouch\nV{path}\nltR.".encode(),
        "reduce p0": pickle.dumps(Evil(cmd), protocol=0),
        "reduce p2": pickle.dumps(Evil(cmd), protocol=2),
        "reduce p5": pickle.dumps(Evil(cmd), protocol=5),
        "nested in an event": pickle.dumps([event(DT, 0, [("X", Evil(cmd))])], protocol=2),
    }


def test_hostile_payloads_are_live(tmp_path):
    """Control: the payloads below do run code under plain pickle.loads."""
    for name, data in hostile(tmp_path / "live").items():
        path = tmp_path / "live"
        try:
            pickle.loads(data)
        except Exception:
            pass
        assert path.exists(), name
        path.unlink()


@pytest.mark.parametrize("name", list(hostile("x")))
def test_hostile_payloads_run_nothing(name, sentinel):
    with pytest.raises(DecodeError, match="not allowed"):
        decode_upload(hostile(sentinel)[name])
    assert not sentinel.exists()


class Plain:
    pass


class Stateful:
    def __setstate__(self, state):
        raise AssertionError("ran __setstate__")


@pytest.mark.parametrize("data", [
    pickle.dumps(Plain(), protocol=0),  # copy_reg._reconstructor
    pickle.dumps(Plain(), protocol=0, fix_imports=False),  # copyreg._reconstructor
    b"ccopyreg\n_reconstructor\n(c__builtin__\nobject\nNtR.",
    pickle.dumps(Stateful(), protocol=2),
    pickle.dumps(Stateful(), protocol=5),
    b"c__builtin__\nbytes\n(Vx\ntR.",  # only the empty bytes() is allowed
    b"cbuiltins\ngetattr\n(cdatetime\ndatetime\nVnow\ntR.",
    b"\x80\x04\x8c\x08datetime\x8c\x0cdatetime.now\x93.",  # dotted qualname
    b"P0\n.",  # persistent id
])
def test_other_globals_refused(data):
    with pytest.raises(DecodeError):
        unpickle(data)


@pytest.mark.parametrize("data", [
    b"c_codecs\nencode\n(Vabc\nVrot13\ntR.",
    b"c_codecs\nencode\n(Vabc\nVutf-8\ntR.",
    b"c_codecs\nencode\n(I1\nVlatin1\ntR.",
    pickle.dumps(np.complex128(1 + 2j), protocol=2),
    pickle.dumps(np.longdouble(1), protocol=2),
    pickle.dumps(np.datetime64("2024-01-01"), protocol=2),
    pickle.dumps(np.str_("ab"), protocol=2),
    pickle.dumps(np.array([1, "a"], dtype=object), protocol=2),
    pickle.dumps(np.arange(3), protocol=5),
    pickle.dumps(np.dtype("O"), protocol=2),
    py2_scalar("O", "|", b"\x00" * 8),
    py2_scalar("i8", "<", b"\x01\x00\x00\x00"),  # wrong size
    py2_scalar("i4", "|", b"\x01\x00\x00\x00"),  # no byte order for a multi-byte type
    py2_scalar("i4", "!", b"\x01\x00\x00\x00"),
    b"cnumpy.core.multiarray\nscalar\n(I1\nS'\\x01'\ntR.",  # no dtype
])
def test_unsafe_or_unsupported_values_refused(data):
    with pytest.raises(DecodeError):
        unpickle(data)


@pytest.mark.parametrize("data", [
    b"c_codecs\nencode\n(dV__call__\nI1\nsb.",  # BUILD on an allowed global
    b"c_codecs\nencode\n(N(dV_func\ncdatetime\ndate\nstb.",  # ... with slot state
    b"cnumpy\ndtype\n(dVcode\nVq\nsb.",
    b"cdatetime\ndatetime\n(I2024\nI5\nI1\ntR(dVyear\nI1\nsb.",  # BUILD on a datetime
    b"cdatetime\ndatetime\n(N(dVyear\nI1\nstb.",  # BUILD with slot state on a datetime class
    b"\x80\x02cnumpy\ndtype\n)\x81.",  # NEWOBJ on a stand-in
    b"\x80\x02cnumpy._core.multiarray\nscalar\n)\x81.",
])
def test_build_and_newobj_cannot_tamper(data):
    with pytest.raises(DecodeError):
        unpickle(data)
    check_py3(decode_upload(pickle.dumps(py3_batch(), protocol=2)))  # the decoder is intact
    assert unpickle(b"c_codecs\nencode\n(V\xe9\nVlatin1\ntR.") == b"\xe9"


@pytest.mark.parametrize("data", [
    b"", b"garbage", b"\x80\x05garbage", b"\x80\x02]q\x00(K\x01K\x02",
    pickle.dumps(py3_batch(), protocol=2)[:-20], pickle.dumps(py3_batch(), protocol=5)[:200],
    b"(lp0\nS'unterminated\n.", b"\x80\x02J\xff\xff\xff",
])
def test_garbage_and_truncated_pickles(data):
    with pytest.raises(DecodeError):
        decode_upload(data)


def test_shared_references_cannot_blow_up():
    node = ["x" * 1000]
    for _ in range(60):
        node = [node, node]  # 2**60 leaves, but a tiny pickle thanks to the memo
    data = pickle.dumps([event(DT, 0, [("BOMB", node)])], protocol=2)
    assert len(data) < 5000
    with pytest.raises(DecodeError, match="event 0: payload expands too far"):
        decode_upload(data)
    deep = unpickle(b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".")  # [[[...]]]
    with pytest.raises(DecodeError, match="event 0: data nests deeper than 120 levels"):
        events_from_payload([event(DT, 0, [("DEEP", deep)])])


def test_data_nests_at_most_data_depth_levels():
    """Deeper data would be refused (too_deep) by the node it is exported to: refused here (208)."""
    def nested(levels):  # a list nesting ``levels`` levels
        value = []
        for _ in range(levels - 1):
            value = [value]
        return value

    # data is level 1, a value in it level 2: DATA_DEPTH - 1 levels of lists fit, one more does not
    fits = events_from_payload([event(DT, 0, [("OK", nested(jsoncodec.DATA_DEPTH - 1))])])
    assert jsoncodec.depth(fits[0]["data"]) == jsoncodec.DATA_DEPTH
    with pytest.raises(DecodeError, match="deeper than 120 levels"):
        events_from_payload([event(DT, 0, [("NO", nested(jsoncodec.DATA_DEPTH))])])
    with pytest.raises(DecodeError, match="deeper than 120 levels"):
        decode_upload(pickle.dumps([event(DT, 0, [("NO", nested(200))])], protocol=2))


def test_a_json_number_beyond_a_double_is_refused_not_stored_as_null():
    payload = '[{"header": {"eventtype_uploadcode": "CIC", "datetime": "2024-05-01 12:00:00", "nanoseconds": 0}, ' \
              '"datalist": [{"data_uploadcode": "PH1", "data": %s}]}]'
    with pytest.raises(DecodeError, match="out of range"):
        decode_upload((payload % "1e400").encode(), "json")
    with pytest.raises(DecodeError, match="out of range"):
        decode_upload((payload % "[1, -1e400]").encode(), "json")
    assert decode_upload((payload % "1.5e308").encode(), "json")[0]["data"] == {"PH1": 1.5e308}
    # Python's json writes NaN and infinity as these constants: null, as from a pickle
    assert decode_upload((payload % "NaN").encode(), "json")[0]["data"] == {"PH1": None}


# -- JSON and the event shape ------------------------------------------------

def json_event(when, ns, datalist, **header):
    return {"header": {"eventtype_uploadcode": "CIC", "datetime": when, "nanoseconds": ns, **header},
            "datalist": [{"data_uploadcode": code, "data": value} for code, value in datalist]}


def test_json_upload():
    payload = [
        json_event("2024-05-01 12:34:56", 7, [("PH1", 1), ("PH1", [2]), ("TR1", "abc"), ("PH1", 3)]),
        json_event("2024-05-01T12:34:56.999999", 999999999, [("X", None)], date="2024-05-01"),
        json_event("2024-05-01T14:34:56+02:00", 0, []),
        json_event("2024-05-01T12:34:56Z", 1, [("NaN", float("nan"))]),
    ]
    events = decode_upload(json.dumps(payload).encode(), fmt="json")
    assert [e["time_ns"] for e in events] == [
        1714566896000000007, 1714566896999999999, 1714566896000000000, 1714566896000000001]
    assert events[0]["data"] == {"PH1": [1, [2], 3], "TR1": "abc"}
    assert events[1] == {"type": "CIC", "time_ns": 1714566896999999999, "data": {"X": None}}
    assert events[3]["data"]["NaN"] is None  # JSON and jsonb have no NaN
    assert decode_upload(b"[]", fmt="json") == [] == decode_upload(pickle.dumps([]))


def test_repeated_codes_keep_list_values_apart():
    [result] = events_from_payload([event(DT, 0, [("A", [1, 2]), ("B", 1), ("A", [3])])])
    assert result["data"] == {"A": [[1, 2], [3]], "B": 1}


GOOD = json_event("2024-05-01 12:34:56", 7, [])


@pytest.mark.parametrize("bad, message", [
    ({"datalist": []}, "no header"),
    ({"header": [], "datalist": []}, "header is not a mapping"),
    ({**GOOD, "datalist": {"a": 1}}, "datalist is not a list"),
    ({"header": GOOD["header"]}, "datalist is not a list"),
    ({**GOOD, "datalist": [{"data": 1}]}, "lacks data_uploadcode"),
    ({**GOOD, "datalist": [{"data_uploadcode": 5, "data": 1}]}, "data_uploadcode is not a string"),
    ({**GOOD, "datalist": [1]}, "datalist item is not a mapping"),
    (json_event("2024-05-01 12:34:56", -1, []), "nanoseconds"),
    (json_event("2024-05-01 12:34:56", 10**9, []), "nanoseconds"),
    (json_event("2024-05-01 12:34:56", True, []), "nanoseconds"),
    (json_event("2024-05-01 12:34:56", 1.5, []), "nanoseconds"),
    (json_event("2024-05-01 12:34:56", "5", []), "nanoseconds"),
    (json_event("yesterday", 0, []), "ISO 8601"),
    (json_event(1714566896, 0, []), "not a datetime"),
    ({"header": {"datetime": "2024-05-01 12:34:56", "nanoseconds": 0}, "datalist": []},
     "eventtype_uploadcode"),
    ({"header": {"eventtype_uploadcode": "CIC", "nanoseconds": 0}, "datalist": []}, "datetime"),
    ("event", "event is not a mapping"),
])
def test_bad_shapes_name_the_event(bad, message):
    with pytest.raises(DecodeError, match=f"event 1: .*{message}"):
        decode_upload(json.dumps([GOOD, bad]).encode(), fmt="json")


@pytest.mark.parametrize("value", [{1, 2}, datetime.timedelta(1), 1j, {1: "int key"}, np.dtype("i8")])
def test_unsupported_data_values(value):
    with pytest.raises(DecodeError, match="event 0"):
        events_from_payload([event(DT, 0, [("X", value)])])


@pytest.mark.parametrize("data, fmt", [
    (b'{"header": {}}', "json"), (b"[1", "json"), (b"\xff\xfe\x00", "json"), (b"[]", "xml"),
    (pickle.dumps({"not": "a list"}), "pickle"), (pickle.dumps(None), "pickle"),
])
def test_bad_payloads(data, fmt):
    with pytest.raises(DecodeError):
        decode_upload(data, fmt=fmt)


# -- a realistic batch -------------------------------------------------------

def test_hundred_event_batch():
    rng = np.random.default_rng(7)
    start = datetime.datetime(2024, 5, 1, 0, 0, 0)
    batch, expected = [], []
    for i in range(100):
        dt = start + datetime.timedelta(seconds=37 * i, microseconds=i)
        ns = (i * 104729 + 17) % 10**9
        traces = [base64.b64encode(rng.bytes(525)).decode() for _ in range(2)]  # 700 chars each
        batch.append(event(dt, ns, [
            ("PH1", np.int64(rng.integers(0, 4096))), ("PH2", np.int64(rng.integers(0, 4096))),
            ("IN1", np.float32(rng.integers(0, 2**20) / 4)), ("IN2", np.float32(0.25 * i)),
            ("NP1", np.uint16(i)), ("TRIG", np.bool_(i % 2)),
            ("TR1", traces[0]), ("TR2", traces[1]),
        ]))
        expected.append(epoch_ns(dt, ns))
    data = pickle.dumps(batch, protocol=2)
    assert 1500 < len(data) / 100 < 2200
    events = decode_upload(data)
    assert len(events) == 100
    assert [e["time_ns"] for e in events] == expected
    assert events[99]["time_ns"] == (1714521600 + 37 * 99) * 10**9 + (99 * 104729 + 17)
    for e, raw in zip(events, batch):
        values = {d["data_uploadcode"]: d["data"] for d in raw["datalist"]}
        assert e["data"] == {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
        assert type(e["data"]["TRIG"]) is bool and type(e["data"]["IN1"]) is float
    assert decode_upload(to_numpy1(data)) == events
