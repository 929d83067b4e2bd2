"""Malformed bodies: each gets its documented code and a message naming the problem, over HTTP on the live server;
then hypothesis throws arbitrary JSON and bytes at the same preparation code in-process."""
from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from neoxserve.api.body import MAX_INTEGER_DIGITS, LongInteger, parse_json
from neoxserve.api.errors import ApiError
from neoxserve.api.inputs import InputPreparer
from neoxserve.api.moderation import Moderator
from neoxserve.api.qianfan_v1.requests import parse_request
from neoxserve.engine.protocol import ModelInfo
from neoxserve.model.tokenizer import Tokenizer

from test_errors import business


@pytest.fixture(scope="module")
def token(server):
    return server.token()


def post(server, token, content: bytes, chat: bool = False):
    url = server.chat_url() if chat else server.completions_url()
    return httpx.post(url, params={"access_token": token}, content=content, timeout=60,
                      headers={"Content-Type": "application/json"})


def surrogate_msg(field: str, code_point: str = "D800", at: int = 0) -> str:
    return f"{field} contains a lone surrogate (U+{code_point}) at character {at}: text must be valid Unicode"


# ---- lone surrogates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,msg", [
    (rb'{"prompt": "\ud800"}', surrogate_msg("prompt")),
    (rb'{"prompt": "ok \udfff"}', surrogate_msg("prompt", "DFFF", 3)),
    (rb'{"prompt": "\udc00\ud83d"}', surrogate_msg("prompt", "DC00")),    # a pair in the wrong order
    (rb'{"prompt": "hi", "stop": ["a", "\ud800"]}', surrogate_msg("stop[1]")),
    (rb'{"prompt": "hi", "user_id": "\ud800"}', surrogate_msg("user_id")),
])
def test_lone_surrogates_336003(server, token, content, msg):
    assert business(post(server, token, content)) == (336003, msg)


@pytest.mark.parametrize("content,msg", [
    (rb'{"messages": [{"role": "user", "content": "\ud800"}]}', surrogate_msg("messages[0].content")),
    (rb'{"messages": [{"role": "\ud800", "content": "x"}]}', surrogate_msg("messages[0].role")),
    (rb'{"messages": [{"role": "user", "content": "x"}], "system": "\udbff"}', surrogate_msg("system", "DBFF")),
])
def test_lone_surrogates_in_chat_336003(server, token, content, msg):
    assert business(post(server, token, content, chat=True)) == (336003, msg)


def test_surrogate_pairs_and_ignored_fields_are_fine(server, token):
    # an escaped pair is one valid character (U+1F600); surrogates in a field nobody reads are ignored
    r = post(server, token, rb'{"prompt": "\ud83d\ude00", "max_output_tokens": 1, "extra": "\ud800"}').json()
    assert r["usage"]["completion_tokens"] == 1


# ---- nesting -----------------------------------------------------------------------------------------------

def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nesting_too_deep_is_invalid_json_336002(server, token):
    for depth in (5_000, 100_000):
        content = b'{"prompt": "hi", "extra_parameters": ' + nested(depth) + b"}"
        assert business(post(server, token, content)) == (336002, "Invalid JSON")


def test_deep_nesting_in_an_ignored_field_is_accepted(server, token):
    # 961 levels used to exhaust the event loop's recursion budget (336000); the parser now runs in a worker
    # thread with the whole budget
    content = b'{"prompt": "hi", "max_output_tokens": 1, "extra_parameters": ' + nested(961) + b"}"
    assert post(server, token, content).json()["usage"]["completion_tokens"] == 1


def test_nesting_in_a_read_field_is_a_wrong_type_336001(server, token):
    assert business(post(server, token, b'{"prompt": "hi", "stop": ' + nested(500) + b"}")) == (
        336001, "Invalid Argument")


# ---- integers too long to read -----------------------------------------------------------------------------

def long_int_msg(field: str, digits: int) -> str:
    return f"{field} is an integer of {digits} digits, more than the {MAX_INTEGER_DIGITS} digits a number may have"


@pytest.mark.parametrize("field", ["temperature", "top_p", "penalty_score", "top_k", "max_output_tokens", "seed"])
def test_integers_too_long_to_read_336003(server, token, field):
    digits = "9" * 5000
    assert business(post(server, token, f'{{"prompt": "hi", "{field}": {digits}}}'.encode())) == (
        336003, long_int_msg(field, 5000))
    assert business(post(server, token, f'{{"prompt": "hi", "{field}": -{digits}1}}'.encode())) == (
        336003, long_int_msg(field, 5001))


def test_long_integers_elsewhere(server, token):
    digits = "7" * 5000
    # in an ignored field: accepted
    r = post(server, token, f'{{"prompt": "hi", "max_output_tokens": 1, "extra": [{digits}]}}'.encode()).json()
    assert r["usage"]["completion_tokens"] == 1
    # where a string or a list of strings belongs: the wrong type
    for content in (f'{{"prompt": {digits}}}', f'{{"prompt": "hi", "stop": [{digits}]}}', digits):
        assert business(post(server, token, content.encode())) == (336001, "Invalid Argument")
    # as long as Python reads: an ordinary integer, out of range
    seed = "1" + "0" * (MAX_INTEGER_DIGITS - 1)
    assert business(post(server, token, f'{{"prompt": "hi", "seed": {seed}}}'.encode())) == (
        336003, f"seed is {seed}, it must be in [0, 2^63)")


def test_parse_int_boundary():
    assert parse_json(b"9" * MAX_INTEGER_DIGITS) == int("9" * MAX_INTEGER_DIGITS)
    assert parse_json(b"-" + b"9" * MAX_INTEGER_DIGITS) == -int("9" * MAX_INTEGER_DIGITS)
    marker = parse_json(b"-" + b"9" * (MAX_INTEGER_DIGITS + 1))
    assert isinstance(marker, LongInteger) and marker.digits == MAX_INTEGER_DIGITS + 1


# ---- fuzzing the preparation in-process --------------------------------------------------------------------

DOCUMENTED = {336001, 336002, 336003}

TEXTS = st.text(max_size=12) | st.sampled_from(["\ud800", "x\udc00y", "\ud83d\ude00", "<|USER|>", " " * 600, ""])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | TEXTS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "x"]) | JSON_VALUES,
                                              "content": TEXTS | JSON_VALUES})
# each field absent, valid, or anything at all: mostly-valid bodies reach the checks behind the first ones
VALID = {
    "prompt": TEXTS, "messages": st.lists(MESSAGE, max_size=5), "system": TEXTS, "stream": st.booleans(),
    "temperature": st.floats(0, 1), "top_k": st.integers(1, 100), "top_p": st.floats(0, 1),
    "penalty_score": st.floats(1, 2), "stop": st.lists(TEXTS, max_size=5), "max_output_tokens": st.integers(1, 300),
    "seed": st.integers(0, 2**63 - 1), "user_id": TEXTS, "extra_parameters": JSON_VALUES,
}
BODIES = st.fixed_dictionaries({}, optional={name: valid | JSON_VALUES for name, valid in VALID.items()})


@pytest.fixture(scope="module")
def preparer(demo_model_dir):
    return InputPreparer(Tokenizer.from_dir(demo_model_dir), ModelInfo("demo", str(demo_model_dir), 4096, False),
                         Moderator(["bad"]))


def prepare_or_error(preparer, raw: bytes, chat: bool):
    try:
        return preparer.prepare_now(lambda: parse_request(parse_json(raw), chat))
    except ApiError as e:
        assert e.code in DOCUMENTED, e
        assert e.message and "\n" not in e.message
        json.dumps(e.message, ensure_ascii=False).encode("utf-8")   # the answer can be written
        return e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, chat=st.booleans(), ascii_only=st.booleans())
def test_any_json_body_gets_a_documented_answer(preparer, body, chat, ascii_only):
    # escaped (\\ud800) or raw (then not UTF-8): lone surrogates either way
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    result = prepare_or_error(preparer, raw, chat)
    if not isinstance(result, ApiError):
        assert result.prompt_ids is not None and result.prompt_tokens == len(result.prompt_ids)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
       chat=st.booleans())
def test_any_bytes_get_a_documented_answer(preparer, raw, chat):
    prepare_or_error(preparer, raw, chat)


def test_long_roles_are_quoted_shortened(server, token):
    role = "r" * 100
    content = json.dumps({"messages": [{"role": role, "content": "x"}]}).encode()
    assert business(post(server, token, content, chat=True)) == (
        336003, f"messages[0].role is '{'r' * 32}...', expected 'user' (roles alternate user, assistant, ..., "
                "ending with user)")
