"""IncrementalDetokenizer: complete UTF-8 only, stop strings never emitted, output equal to a one-shot decode."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from neoxserve.engine.worker.detokenizer import IncrementalDetokenizer
from neoxserve.model.tokenizer import Tokenizer


class ChunkTokenizer:
    """Token i is chunks[i]: lets tests split bytes anywhere (ids 0-255 of ByteTokenizer are single bytes)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes:
        return self.chunks[token_id]


def byte_tokenizer() -> ChunkTokenizer:
    return ChunkTokenizer([bytes([b]) for b in range(256)])


def reference(data: bytes, stop: tuple[str, ...]) -> str:
    """The whole output at once: decode with replacement, cut where the first stop string to complete begins."""
    text = data.decode("utf-8", errors="replace")
    ends = [(text.find(s) + len(s), text.find(s)) for s in stop if s and s in text]
    return text[:min(ends)[1]] if ends else text


def run(tok, ids, stop=(), skip_special_tokens=True) -> tuple[list[str], bool]:
    detok = IncrementalDetokenizer(tok, stop, skip_special_tokens)
    outputs = []
    for i in ids:
        outputs.append(detok.push(i))
        if detok.stopped:
            break
    if not detok.stopped:
        outputs.append(detok.flush())
    return outputs, detok.stopped


@pytest.fixture(scope="module")
def real(assets_dir) -> Tokenizer:
    return Tokenizer.from_file(assets_dir / "gpt-neox-20b-tokenizer.json")


def test_never_splits_a_character_real_tokenizer(real):
    text = "中文输出测试：你好，世界！😀🎉👍🏽 done"
    ids = real.encode(text)
    partial = [i for i in ids if real.token_bytes(i).decode("utf-8", errors="replace").count("\ufffd")]
    assert partial, "expected byte-level tokens that hold part of a character"
    outputs, _ = run(real, ids)
    assert "".join(outputs) == text
    assert all("\ufffd" not in o for o in outputs)


def test_never_splits_a_character_byte_level():
    text = "a你😀b"
    outputs, _ = run(byte_tokenizer(), list(text.encode()))
    assert outputs == ["a", "", "", "你", "", "", "", "😀", "b", ""]


def test_stop_string_split_over_tokens():
    tok = ChunkTokenizer([b"Hello ", b"wor", b"ld", b"! ", b"Ob", b"serv", b"ation: ", b"x"])
    outputs, stopped = run(tok, range(8), stop=("Observation:",))
    assert stopped
    assert "".join(outputs) == "Hello world! "
    assert outputs[4:6] == ["", ""]   # "Ob", "serv" held back until the stop completes


def test_stop_string_at_the_very_start():
    tok = ChunkTokenizer([b"##", b"#", b" after"])
    outputs, stopped = run(tok, range(3), stop=("###",))
    assert stopped and "".join(outputs) == ""
    assert outputs == ["", ""]


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    tok = ChunkTokenizer([b"x ", b"Obs", b"cure", b" Ob"])
    detok = IncrementalDetokenizer(tok, ("Observation",))
    assert detok.push(0) == "x "
    assert detok.push(1) == ""
    assert detok.push(2) == "Obscure"
    assert detok.push(3) == " "
    assert detok.flush() == "Ob"            # the end of generation: nothing can complete a stop any more
    assert not detok.stopped


def test_incomplete_tail_becomes_replacement_on_flush():
    data = "ok😀".encode()[:-2]
    outputs, stopped = run(byte_tokenizer(), list(data))
    assert not stopped
    assert outputs[-1] == "\ufffd"
    assert "".join(outputs) == data.decode("utf-8", errors="replace")


def test_stop_spanning_chinese_with_real_tokenizer(real):
    text = "答案是：四十二。结束了吗？还有更多"
    ids = real.encode(text)
    outputs, stopped = run(real, ids, stop=("结束",))
    assert stopped
    assert "".join(outputs) == text[:text.index("结束")]


def test_special_tokens_follow_skip_flag(real):
    ids = real.encode("hi<|endoftext|>there")
    assert "".join(run(real, ids)[0]) == "hithere"
    assert "".join(run(real, ids, skip_special_tokens=False)[0]) == "hi<|endoftext|>there"
    outputs, stopped = run(real, ids, stop=("<|end",), skip_special_tokens=False)
    assert stopped and "".join(outputs) == "hi"


def test_push_after_stop_is_empty():
    tok = ChunkTokenizer([b"ab", b"cd"])
    detok = IncrementalDetokenizer(tok, ("b",))
    assert detok.push(0) == "a" and detok.stopped
    assert detok.push(1) == "" and detok.flush() == ""


def test_first_stop_to_complete_wins():
    tok = byte_tokenizer()
    outputs, _ = run(tok, list(b"xabcd"), stop=("abcd", "c"))
    assert "".join(outputs) == "xab"
    outputs, _ = run(tok, list(b"xabcd"), stop=("c", "bc"))
    assert "".join(outputs) == "xa"
    # both complete inside one token: still the one that completes first
    outputs, _ = run(ChunkTokenizer([b"x", b"abcd"]), [0, 1], stop=("abcd", "c"))
    assert "".join(outputs) == "xab"


# pieces of multi-byte characters: every proper prefix and suffix of their UTF-8
FRAGMENTS = sorted({c.encode()[:k] for c in "你😀👍🏽é" for k in range(1, len(c.encode()))}
                   | {c.encode()[k:] for c in "你😀👍🏽é" for k in range(1, len(c.encode()))})
PIECES = st.one_of(
    st.binary(min_size=1, max_size=3),
    st.sampled_from(["a", "b", "ab", "你", "😀", "\ufffd", "ba"]).map(str.encode),
    st.sampled_from(FRAGMENTS),
)
STOPS = st.lists(st.text(alphabet="ab你😀\ufffd", min_size=1, max_size=4), max_size=4).map(tuple)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(PIECES, min_size=1, max_size=12), data=st.data(), stop=STOPS)
def test_output_equals_one_shot_decode_cut_at_stop(chunks, data, stop):
    tok = ChunkTokenizer(chunks)
    ids = data.draw(st.lists(st.integers(0, len(chunks) - 1), max_size=30))
    outputs, stopped = run(tok, ids, stop)
    stream = b"".join(chunks[i] for i in ids)
    expected = reference(stream, stop)
    assert "".join(outputs) == expected
    assert stopped == (expected != stream.decode("utf-8", errors="replace"))
    # each output is whole characters: no replacement characters that the one-shot decode does not have
    assert sum(o.count("\ufffd") for o in outputs) == expected.count("\ufffd")
    if not any(a != b and a in b for a in stop for b in stop):
        text = stream.decode("utf-8", errors="replace")
        starts = [text.find(s) for s in stop if s in text]
        assert "".join(outputs) == (text[:min(starts)] if starts else text)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_real_tokenizer_streams_match_the_reference(real, data):
    text = data.draw(st.text(alphabet="ab 你好😀\n", max_size=20))
    ids = real.encode(text) + data.draw(st.lists(st.integers(0, real.vocab_size - 1), max_size=6))
    full = b"".join(real.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
    # stops cut from the text itself, so that they do occur
    spans = st.tuples(st.integers(0, len(full)), st.integers(1, 4)).map(lambda t: full[t[0]:t[0] + t[1]])
    stop = tuple(s for s in data.draw(st.lists(spans, max_size=3)) if s)
    outputs, _ = run(real, ids, stop)
    assert "".join(outputs) == reference(b"".join(real.token_bytes(i) for i in ids), stop)
