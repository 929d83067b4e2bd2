"""The trained demo model (`--model demo`, the default; model/demo_trained/README.md): it loads from the package,
has the documented size, and writes mostly real English words where the random demo model writes fragments."""
from __future__ import annotations

import hashlib
import re

import pytest

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.worker.core import LLMEngine
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.model.demo import TRAINED_PACKAGE_DIR, ensure_trained_demo_model

PROMPT = "The meaning of life is"
WORD = re.compile(r"[A-Za-z]+")
MIN_REAL_WORDS = 0.6


@pytest.fixture(scope="module")
def english_words() -> set[str]:
    """Words of the Python documentation shipped with Python (one of the training sources) and of the model card."""
    from pydoc_data.topics import topics

    text = " ".join(topics.values()) + (TRAINED_PACKAGE_DIR / "README.md").read_text(encoding="utf-8")
    return {w.lower() for w in WORD.findall(text)}


@pytest.fixture(scope="module")
def trained_engine(tmp_path_factory) -> LLMEngine:
    data_dir = tmp_path_factory.mktemp("data")
    return LLMEngine.from_config(engine_config(Settings.load(None, model="demo", data_dir=str(data_dir))))


def _greedy(engine: LLMEngine, prompt_ids: list[int], n: int, stop: tuple[str, ...] = ()) -> tuple[str, str | None]:
    engine.add_request("r", prompt_ids, SamplingParams(greedy=True, max_new_tokens=n, stop=stop))
    text, reason = "", None
    while engine.has_unfinished():
        for d in engine.step():
            text += d.text
            if d.finished:
                reason = d.finish_reason
    return text, reason


def _real_word_fraction(text: str, words: set[str]) -> float:
    found = [w.lower() for w in WORD.findall(text) if len(w) > 1]
    return sum(w in words for w in found) / max(1, len(found))


def test_committed_file_is_small_and_expands_to_the_full_vocabulary(tmp_path):
    assert (TRAINED_PACKAGE_DIR / "model.safetensors").stat().st_size <= 32 * 2**20
    from safetensors import safe_open

    path = ensure_trained_demo_model(tmp_path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_slice("gpt_neox.embed_in.weight").get_shape()[0] == 50432
        assert f.get_slice("embed_out.weight").get_shape()[0] == 50432
    assert ensure_trained_demo_model(tmp_path) == path   # written once


def test_trained_model_writes_real_words(trained_engine, english_words):
    assert trained_engine.tokenizer.token_to_id("<|USER|>") == 50278   # StableLM-Tuned-Alpha's chat ids
    text, _ = _greedy(trained_engine, trained_engine.tokenizer.encode(PROMPT), 40)
    assert _real_word_fraction(text, english_words) >= MIN_REAL_WORDS, text


def test_random_demo_model_fails_the_same_check(tmp_path, english_words):
    engine = LLMEngine.from_config(engine_config(Settings.load(None, model="demo-random", data_dir=str(tmp_path))))
    text, _ = _greedy(engine, engine.tokenizer.encode(PROMPT), 40)
    assert _real_word_fraction(text, english_words) < MIN_REAL_WORDS, text


def test_chat_answer_is_words_and_stop_string_cuts_it(trained_engine, english_words):
    tok = trained_engine.tokenizer
    ids = tok.encode_chat([{"role": "user", "content": "Tell me a joke."}])
    text, _ = _greedy(trained_engine, ids, 48)
    assert "<|" not in text and _real_word_fraction(text, english_words) >= MIN_REAL_WORDS, text
    first_word = WORD.findall(text)[1] if len(WORD.findall(text)) > 1 else WORD.findall(text)[0]
    cut, reason = _greedy(trained_engine, ids, 48, stop=(first_word,))
    assert reason == "stop" and first_word not in cut and text.startswith(cut), (text, cut)


def test_the_default_model_is_the_trained_one(tmp_path):
    from neoxserve.commands.serve import banner
    from neoxserve.engine.worker.core import resolve_model_dir
    from neoxserve.platform import NewKeys

    config = engine_config(Settings(data_dir=tmp_path))
    assert config.model == "demo" and config.model_name == "demo"
    # a directory expanded from other (older) committed weights is not served after an upgrade
    stale = tmp_path / "demo-trained-model-000000000000"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"older weights")
    digest = hashlib.sha256((TRAINED_PACKAGE_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert resolve_model_dir(config) == ensure_trained_demo_model(tmp_path) == tmp_path / \
        f"demo-trained-model-{digest[:12]}"
    random = engine_config(Settings(model="demo-random", data_dir=tmp_path))
    assert random.model_name == "demo-random" and resolve_model_dir(random) == tmp_path / "demo-random-model"
    keys = NewKeys(app_id=1, name="default", api_key="k", secret_key="s")
    assert "trained" in banner(Settings(), "demo", keys, config.model)
    assert "random noise" in banner(Settings(), "demo-random", keys, random.model)
    assert "noise" not in banner(Settings(), "demo", keys, config.model)


def test_generate_uses_the_trained_model_by_default(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "neoxserve.cli", "generate", "--data-dir", str(tmp_path), PROMPT,
                             "--max-new-tokens", "24", "--temperature", "0"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained" in result.stderr and "noise" not in result.stderr
    assert [p.name for p in tmp_path.glob("demo-trained-model-*/model.safetensors")] == ["model.safetensors"]
    assert not (tmp_path / "demo-random-model").exists()
    assert WORD.findall(result.stdout), result.stdout
