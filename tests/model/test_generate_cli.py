"""`neoxserve generate` and `neoxserve demo write`, end to end in a subprocess."""
from __future__ import annotations

import hashlib
import subprocess
import sys

from neoxserve.commands.engine_config import engine_config
from neoxserve.config import Settings
from neoxserve.engine.core import LLMEngine
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.model.tokenizer import Tokenizer

PROMPT = "The city of Beijing"


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neoxserve.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _expected_text(model_dir, max_new_tokens: int) -> str:
    engine = LLMEngine.from_config(engine_config(Settings.load(None, model=str(model_dir))))
    engine.add_request("r", engine.tokenizer.encode(PROMPT), SamplingParams(greedy=True,
                                                                            max_new_tokens=max_new_tokens))
    text = ""
    while engine.has_unfinished():
        text += "".join(d.text for d in engine.step())
    return text


def test_generate_on_random_demo_model(tmp_path, demo_model_dir):
    result = _cli("generate", "--model", "demo-random", "--data-dir", str(tmp_path / "data"), PROMPT,
                  "--max-new-tokens", "12", "--temperature", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _expected_text(demo_model_dir, 12) + "\n"   # the text alone
    assert "noise" in result.stderr
    assert "new tokens: 12" in result.stderr and "tokens/s" in result.stderr
    assert f"prompt tokens: {len(Tokenizer.from_dir(demo_model_dir).encode(PROMPT))}," in result.stderr
    assert (tmp_path / "data" / "demo-random-model" / "model.safetensors").is_file()


def test_generate_with_model_dir_and_sampling_flags(tmp_path, demo_model_dir):
    args = ["generate", "--model", str(demo_model_dir), PROMPT, "--max-new-tokens", "10", "--temperature", "0.7",
            "--top-k", "20", "--top-p", "0.9", "--penalty-score", "1.2", "--seed", "7", "--stop", "zzz",
            "--stop", "qqq", "--dtype", "float32", "--device", "cpu"]
    first, second = _cli(*args, cwd=tmp_path), _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout                                # same seed, same text
    assert "noise" not in first.stderr


def test_generate_rejects_bad_flags(tmp_path, demo_model_dir):
    result = _cli("generate", "--model", str(demo_model_dir), PROMPT, "--top-p", "1.5", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "top_p" in result.stderr


def test_demo_write(tmp_path, demo_model_dir):
    from neoxserve.model.demo import write_trained_demo_model

    trained = write_trained_demo_model(tmp_path / "expected-trained")
    for args, expected in ((("--random",), demo_model_dir), ((), trained)):
        out = tmp_path / f"d{len(args)}"
        result = _cli("demo", "write", str(out), *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert ("random" in result.stderr) == bool(args), result.stderr
        for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
            assert (hashlib.sha256((out / name).read_bytes()).digest()
                    == hashlib.sha256((expected / name).read_bytes()).digest()), (args, name)


def test_generate_refuses_a_prompt_the_engine_rejects(tmp_path, demo_model_dir):
    result = _cli("generate", "--model", str(demo_model_dir), "", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == "neoxserve generate: the prompt is empty"

    result = _cli("generate", "--model", str(demo_model_dir), "hi", "--max-new-tokens", "5000", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    n = len(Tokenizer.from_dir(demo_model_dir).encode("hi"))
    assert result.stderr.splitlines()[-1] == (f"neoxserve generate: prompt ({n} tokens) + max_new_tokens (5000) = "
                                             f"{n + 5000} exceeds the model's context of 4096 tokens")


def test_generate_reports_a_model_that_cannot_load(tmp_path):
    result = _cli("generate", "--model", str(tmp_path / "nope"), "hi", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-1] == f"neoxserve generate: model directory {tmp_path / 'nope'} does not exist"


def test_generate_applies_the_service_ranges(tmp_path, demo_model_dir):
    """The sampling flags obey the same ranges as a request to the API (SAMPLING_RULES), not only what the
    sampler can compute."""
    for flag, value, message in (("--temperature", "1.5", "temperature is 1.5, it must be in (0, 1.0]"),
                                 ("--penalty-score", "2.5", "penalty_score is 2.5, it must be in [1.0, 2.0]"),
                                 ("--top-k", "-2", "top_k is -2, it must be a positive integer")):
        result = _cli("generate", "--model", str(demo_model_dir), PROMPT, flag, value, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines()[-1] == f"neoxserve generate: {message}"
