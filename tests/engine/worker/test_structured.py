"""Structured outputs in the engine: masks in the batched step, per-sample grammar state, grammar ends the
sequence, logprobs of the masked distribution, penalties, preemption (engine/worker/structured.py)."""
from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest
import torch

from neoxserve.engine.errors import RequestRejected
from neoxserve.engine.grammar import GrammarCompiler, GrammarError, GrammarSpec, load_tokenizer, to_llguidance
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker.sequence import Sequence
from neoxserve.engine.worker.structured import StructuredOutputs

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"},
                   "size": {"type": "string", "enum": ["s", "m", "l"]}},
    "required": ["name", "ok", "size"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def compiler(demo_model_dir):
    return GrammarCompiler(load_tokenizer(demo_model_dir))


def grammar(compiler, kind, text=""):
    return compiler.compile(GrammarSpec(kind, text))


def test_schema_answers_validate_with_n_and_stop_strings(make_engine, h, compiler):
    engine = make_engine()
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=60, n=3, seed=7, stop=("\n",),
                            grammar=grammar(compiler, "json_schema", json.dumps(SCHEMA)))
    engine.add_request("a", engine.tokenizer.encode("Describe it:"), params)
    engine.add_request("free", engine.tokenizer.encode("Describe it:"), SamplingParams(max_new_tokens=20, seed=7))
    out = h.run_all(engine)
    by_index: dict[int, list] = {}
    for d in out["a"]:
        by_index.setdefault(d.index, []).append(d)
    assert sorted(by_index) == [0, 1, 2]
    texts = [h.text_of(ds) for ds in by_index.values()]
    for ds, text in zip(by_index.values(), texts, strict=True):
        assert ds[-1].finish_reason == "stop", text
        jsonschema.validate(json.loads(text), SCHEMA)
    assert len(set(texts)) > 1          # each sample its own draw and grammar state
    # the unconstrained request in the same steps is not constrained: the demo model's noise is not JSON
    free = h.text_of(out["free"])
    assert out["free"][-1].finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(free)


def test_unconstrained_rows_untouched_by_a_constrained_neighbour(make_engine, h, compiler):
    prompt = [5, 6, 7, 8]
    alone = make_engine()
    alone.add_request("free", prompt, SamplingParams(max_new_tokens=12, seed=3))
    expected = h.tokens_of(h.run_all(alone)["free"])
    mixed = make_engine()
    mixed.add_request("g", prompt, SamplingParams(max_new_tokens=12, seed=3,
                                                  grammar=grammar(compiler, "regex", "[a-z]{3,40}")))
    mixed.add_request("free", prompt, SamplingParams(max_new_tokens=12, seed=3))
    out = h.run_all(mixed)
    assert h.tokens_of(out["free"]) == expected
    assert re.fullmatch("[a-z]{3,40}", h.text_of(out["g"]))


def test_grammar_end_is_stop_and_length_cut_off_is_length(make_engine, h, compiler):
    engine = make_engine()
    engine.add_request("choice", [5, 6], SamplingParams(max_new_tokens=30, seed=1,
                                                        grammar=grammar(compiler, "choice", '["yes", "no"]')))
    engine.add_request("cut", [5, 6], SamplingParams(max_new_tokens=3, seed=1,
                                                     grammar=grammar(compiler, "regex", "[a-z]{50}")))
    out = h.run_all(engine)
    assert h.text_of(out["choice"]) in ("yes", "no")
    assert out["choice"][-1].finish_reason == "stop"
    assert out["cut"][-1].finish_reason == "length"
    assert re.fullmatch("[a-z]*", h.text_of(out["cut"]))
    assert out["cut"][-1].completion_tokens == 3


def test_greedy_takes_the_best_allowed_token_and_logprobs_are_masked(make_engine, h, compiler):
    """Greedy under a grammar is the argmax of the masked logits; the reported logprobs are the masked
    distribution's (vLLM's): every alternative is an allowed token, and they sum to at most 1."""
    engine = make_engine()
    g = grammar(compiler, "regex", "(ab|cd|ef)+x")
    engine.add_request("g", [5, 6, 7], SamplingParams(greedy=True, max_new_tokens=6, logprobs=5, grammar=g))
    out = h.run_all(engine)["g"]
    structured = engine.runner.structured
    assert structured is not None
    matcher = structured.matcher(g)
    for d in out:
        for lp in d.logprobs or []:
            mask = torch.zeros(1, structured.num_token_ids)
            seq = Sequence("probe", [1], SamplingParams())
            seq.grammar = matcher
            structured.apply_masks(mask, [seq])
            allowed = set(torch.isfinite(mask[0]).nonzero().flatten().tolist())
            assert lp.token_id in allowed
            finite = [(t, v) for t, v in lp.top if v > -math.inf]
            assert {t for t, _ in finite} <= allowed          # forbidden alternatives come with -inf, if at all
            assert len(lp.top) == 5 and len(finite) == min(5, len(allowed))
            assert lp.top[0][0] == lp.token_id        # greedy: the chosen token is the most likely allowed one
            assert math.fsum(math.exp(v) for _, v in finite) <= 1.0 + 1e-5
            matcher.consume_token(lp.token_id)
    assert re.fullmatch("(ab|cd|ef)+x", "".join(d.text for d in out)) or out[-1].finish_reason == "length"


def test_penalties_apply_within_the_mask(make_engine, h, compiler):
    engine = make_engine()
    g = grammar(compiler, "regex", "[ab]{12}")
    engine.add_request("p", [5, 6], SamplingParams(greedy=True, max_new_tokens=12, penalty_score=2.0,
                                                   frequency_penalty=2.0, grammar=g))
    engine.add_request("q", [5, 6], SamplingParams(greedy=True, max_new_tokens=12, grammar=g))
    out = h.run_all(engine)
    for rid in ("p", "q"):
        assert re.fullmatch("[ab]*", h.text_of(out[rid])), h.text_of(out[rid])
    # the penalties change which allowed token wins: greedy without them repeats, with them it alternates
    assert h.tokens_of(out["p"]) != h.tokens_of(out["q"])


def test_preemption_keeps_the_grammar_state(make_engine, h, compiler):
    g = grammar(compiler, "json_schema", json.dumps(SCHEMA))
    prompt = list(range(5, 40))
    ref = make_engine()
    ref.add_request("r", prompt, SamplingParams(max_new_tokens=60, seed=11, grammar=g))
    expected = h.text_of(h.run_all(ref)["r"])
    # a KV pool so small that 4 such sequences cannot all run: the newest are preempted and recomputed
    engine = make_engine(kv_block_size=4, kv_cache_memory_mb=1, max_num_batched_tokens=32)
    for i in range(4):
        engine.add_request(f"r{i}", prompt, SamplingParams(max_new_tokens=60, seed=11, grammar=g))
    out = h.run_all(engine)
    assert engine.scheduler.num_preemptions > 0
    for i in range(4):
        assert h.text_of(out[f"r{i}"]) == expected
        jsonschema.validate(json.loads(expected), SCHEMA)


def test_engine_refuses_an_invalid_grammar_before_queueing(make_engine):
    engine = make_engine()
    bad = to_llguidance(GrammarSpec("grammar", "start: foo"))
    with pytest.raises(RequestRejected, match="unknown name"):
        engine.add_request("bad", [5, 6], SamplingParams(n=2, grammar=bad))
    assert not engine.has_unfinished() and not engine.scheduler.waiting


@pytest.mark.parametrize(("spec", "message"), [
    (GrammarSpec("json_schema", '{"type": "objectx"}'), "Invalid type: objectx"),
    (GrammarSpec("regex", "[a-"), "unclosed character class"),
    (GrammarSpec("grammar", "start: foo"), 'unknown name: "foo"'),
    (GrammarSpec("json_schema", "{not json"), "key must be a string at line 1 column 2"),
])
def test_compiler_names_the_problem(compiler, spec, message):
    with pytest.raises(GrammarError, match=re.escape(message)):
        compiler.compile(spec)
    with pytest.raises(GrammarError, match=re.escape(message)):   # cached, same answer
        compiler.compile(spec)


def test_masks_forbid_the_padded_rows_and_the_disallowed(demo_model_dir, compiler):
    from neoxserve.model.tokenizer import Tokenizer
    tok = Tokenizer.from_dir(demo_model_dir)
    structured = StructuredOutputs(demo_model_dir, tok.vocab_size, tok.stop_token_ids)
    g = compiler.compile(GrammarSpec("choice", '["yes"]'))
    seqs = [Sequence("a", [1], SamplingParams()), Sequence("b", [1], SamplingParams())]
    seqs[0].grammar = structured.matcher(g)
    logits = torch.zeros(2, tok.vocab_size)
    structured.apply_masks(logits, seqs)
    allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert allowed and all(tok.decode([t]) and "yes".startswith(tok.decode([t])) for t in allowed)
    assert torch.equal(logits[1], torch.zeros(tok.vocab_size))     # the unconstrained row is untouched


def test_speculation_leaves_constrained_rows_to_one_masked_token_a_step(make_engine, h, compiler):
    """With n-gram speculation on, a constrained sequence gets no draft (its verify rows would need masks of
    states the step does not compute) and answers exactly as with speculation off; an unconstrained neighbour
    that repeats its prompt still has drafts accepted."""
    repeated = [(7 * j) % 50 + 100 for j in range(20)] * 3
    free = SamplingParams(greedy=True, max_new_tokens=40, ignore_eos=True)

    def run(method):
        engine = make_engine(speculative_method=method)
        engine.add_request("g", repeated, SamplingParams(max_new_tokens=24, seed=5, grammar=grammar(
            compiler, "regex", "[a-z]{4,20}")))
        engine.add_request("free", repeated, free)
        out = h.run_all(engine)
        assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
        return out, engine.stats()

    off, _ = run("none")
    on, stats = run("ngram")
    assert re.fullmatch("[a-z]{4,20}", h.text_of(on["g"]))
    assert h.tokens_of(on["g"]) == h.tokens_of(off["g"])
    assert len(on["g"]) == len(h.tokens_of(on["g"]))        # one token per delta: never a verified draft
    assert h.tokens_of(on["free"]) == h.tokens_of(off["free"])
    assert stats["spec_accepted_tokens_total"] > 0
