"""`neoxserve generate`: complete one prompt in-process and stream the text to stdout.

stdout carries the completion text only (streamed as it is made); timing and notes go to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..choices import DTYPES
from ..config import Settings
from ..engine.sampling_params import SamplingParams
from .engine_config import engine_config
from .model_flags import LOAD_FLAGS, add_load_arguments
from .speculative_flags import SPECULATIVE_FLAGS, add_speculative_arguments


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("generate", help="complete one prompt locally (no server)", description=__doc__)
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--model", help="Hugging Face model directory, 'demo' (default: the embedded trained toy model) or "
                   "'demo-random' (random weights)")
    p.add_argument("--data-dir", dest="data_dir", help="where the demo model is written")
    p.add_argument("--max-new-tokens", type=int, default=128)
    # the service's defaults (docs/sampling.md), so that generate and the API sample alike
    defaults = SamplingParams()
    p.add_argument("--temperature", type=float, default=defaults.temperature, help="(0, 1]; 0 = greedy")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = off")
    p.add_argument("--top-p", type=float, default=defaults.top_p, help="[0, 1]; 1 = off")
    p.add_argument("--penalty-score", type=float, default=defaults.penalty_score,
                   help="repetition penalty in [1, 2]")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); never printed")
    p.add_argument("--seed", type=int, help="same seed, same text")
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    add_load_arguments(p)
    add_speculative_arguments(p)
    p.set_defaults(run=run)


def _out_of_range(args: argparse.Namespace, greedy: bool) -> str | None:
    """The service's ranges (the ones the API applies) for the sampling flags; temperature 0 and top_k 0 are this
    command's spellings of greedy and off."""
    from ..platform.records import SAMPLING_RULES

    given = {"temperature": None if greedy else args.temperature, "top_k": args.top_k or None,
             "top_p": args.top_p, "penalty_score": args.penalty_score}
    for name, value in given.items():
        rule = SAMPLING_RULES[name]
        if value is not None and not rule.ok(value):
            return f"{name} is {value:g}, it must be {rule.message}"
    return None


def run(args: argparse.Namespace) -> int:
    from ..engine.worker.core import LLMEngine
    from ..engine.errors import RequestRejected
    from ..model.errors import CheckpointError

    from pydantic import ValidationError

    from .common import fail, first_error
    try:
        settings = Settings.load(getattr(args, "config", None), model=args.model, data_dir=args.data_dir,
                                 dtype=args.dtype, device=args.device,
                                 **{k: getattr(args, k) for k in (*LOAD_FLAGS, *SPECULATIVE_FLAGS)})
    except ValidationError as e:
        return fail(f"invalid settings: {first_error(e)}")
    config = engine_config(settings)
    greedy = args.temperature == 0
    problem = _out_of_range(args, greedy)
    if problem is not None:
        print(f"neoxserve generate: {problem}", file=sys.stderr)
        return 2
    try:
        params = SamplingParams(temperature=1.0 if greedy else args.temperature, top_k=args.top_k,
                                top_p=args.top_p, penalty_score=args.penalty_score,
                                max_new_tokens=args.max_new_tokens, stop=tuple(args.stop), seed=args.seed,
                                greedy=greedy)
    except ValueError as e:
        print(f"neoxserve generate: {e}", file=sys.stderr)
        return 2
    if config.is_demo:
        print("Using the demo model: a toy trained here for minutes (model/demo_trained/README.md): English-looking "
              "phrases, no knowledge.", file=sys.stderr)
    elif config.is_random_demo:
        print("Using the random-weight demo model: its text is noise.", file=sys.stderr)

    try:
        engine = LLMEngine.from_config(config)
    except CheckpointError as e:
        print(f"neoxserve generate: {e}", file=sys.stderr)
        return 1
    prompt_ids = engine.tokenizer.encode(args.prompt)
    try:
        engine.add_request("generate", prompt_ids, params)
    except RequestRejected as e:      # e.g. an empty prompt, or prompt + max_new_tokens beyond the context
        print(f"neoxserve generate: {e}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    first = None
    new_tokens = 0
    reason = None
    while engine.has_unfinished():
        for delta in engine.step():
            if delta.token_ids and first is None:
                first = time.perf_counter()
            new_tokens = delta.completion_tokens
            if delta.text:
                sys.stdout.write(delta.text)
                sys.stdout.flush()
            if delta.finished:
                reason = delta.finish_reason
                if delta.error:
                    print(f"\nneoxserve generate: {delta.error}", file=sys.stderr)
    end = time.perf_counter()
    sys.stdout.write("\n")
    sys.stdout.flush()

    first = first or end
    decode_rate = (new_tokens - 1) / (end - first) if new_tokens > 1 and end > first else 0.0
    print(f"prompt tokens: {len(prompt_ids)}, new tokens: {new_tokens} (finish: {reason}), "
          f"first token after {first - start:.3f} s, {decode_rate:.1f} tokens/s decoding, "
          f"{new_tokens / (end - start):.1f} tokens/s overall", file=sys.stderr)
    return 1 if reason == "error" else 0
