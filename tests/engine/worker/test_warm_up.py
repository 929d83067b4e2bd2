"""The engine runs a scratch request through the model before it is ready (ModelRunner.warm_up), so the first
real request pays no first-call costs; the warm-up must leave no trace a request could see."""
from __future__ import annotations

from neoxserve.engine.worker.runner import ModelRunner
from neoxserve.engine.sampling_params import SamplingParams

PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def test_warm_up_runs_the_model_before_the_engine_exists(make_engine, monkeypatch):
    calls = []
    real = ModelRunner.run
    monkeypatch.setattr(ModelRunner, "run", lambda self, batch: calls.append(batch.num_new_tokens) or real(self, batch))
    engine = make_engine()
    assert calls == [[32], [1]]          # a prefill long enough for the many-row path, then a decode step
    stats = engine.stats()
    assert stats["running"] == stats["waiting"] == stats["kv_blocks_used"] == 0
    assert not engine.block_manager.cached and not engine.has_unfinished()


def test_requests_after_warm_up_give_what_they_give_without_it(make_engine, monkeypatch, h):
    params = [SamplingParams(greedy=True, max_new_tokens=20, ignore_eos=True),
              SamplingParams(seed=7, max_new_tokens=20, ignore_eos=True)]

    def outputs(engine):
        for i, p in enumerate(params):
            engine.add_request(f"r{i}", PROMPT, p)
        return {k: h.tokens_of(v) for k, v in h.run_all(engine).items()}

    warmed = outputs(make_engine())
    monkeypatch.setattr(ModelRunner, "warm_up", lambda self, prompt_tokens=32: None)
    cold = outputs(make_engine())
    assert warmed == cold and all(len(t) == 20 for t in warmed.values())
