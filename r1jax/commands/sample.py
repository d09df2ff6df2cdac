"""``r1jax sample``: sample completions for prompts from a checkpoint and print or write them.

r1jax sample --config.model_from=ckpt/ --config.sample.prompts="('What is 2+3?',)" \\
    --config.sample.num_samples=4 --config.sample.temperature=0.7
r1jax sample --config.model_from=ckpt/ --config.sample.prompts_file=prompts.jsonl \\
    --config.output=out.jsonl --config.sample.greedy=True

The checkpoint (``config.model_from``) is opened by ``r1jax.checkpoint.load_params`` (an r1jax
run directory or a Hugging Face directory, detected by content) onto ``config.mesh``. Each
output JSONL line holds the prompt, the completion text and ids, the per-token log-probs, length
and finish reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from r1jax import distributed
from r1jax.checkpoint import find_tokenizer, load_params
from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.data import load_tokenizer
from r1jax.data.templates import PromptFormatter, encode_prompt
from r1jax.sampling import Sampler
from r1jax.sharding import make_mesh


def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    texts = list(prompts)
    if prompts_file:
        with open(prompts_file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    texts.append(str(record["prompt"]))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{prompts_file}:{n}: expected a JSON object with a 'prompt' field ({e})"
                    ) from e
    if not texts:
        raise ValueError(
            "no prompts: set --config.sample.prompts=\"('TEXT',)\" or "
            "--config.sample.prompts_file=F.jsonl"
        )
    return texts


def _policy(stage, checkpoint: str, mesh):
    """``(model_config, params)`` of ``model_from``, refused if it is a reward model."""
    overrides = {"compute_dtype": stage.link("dtype")} if stage.link("dtype") else {}
    model_config, params = load_params(checkpoint, mesh=mesh, **overrides)
    if model_config.score_head:
        raise ValueError(
            f"config.model_from={checkpoint}: a reward model (a score head) scores text, "
            "it does not sample"
        )
    return model_config, params


def main(argv: list[str]) -> int:
    config, _ = parse_config(argv, command="r1jax sample", default="sample", doc=__doc__)
    stage = typed(config)
    opts, checkpoint = stage.sample, stage.link("model_from")
    if not checkpoint:
        raise ValueError("r1jax sample needs --config.model_from=DIR (an r1jax run or HF dir)")
    distributed.initialize(config)
    mesh = make_mesh(stage.mesh)
    model_config, params = _policy(stage, checkpoint, mesh)
    output = stage.link("output")
    if output:  # before the sampling, not after it
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    tokenizer_path = stage.link("tokenizer") or find_tokenizer(checkpoint)
    if tokenizer_path is None:
        raise FileNotFoundError(f"no tokenizer found next to {checkpoint}: set config.tokenizer")
    tokenizer = load_tokenizer(str(tokenizer_path))
    texts = read_prompts(opts.prompts, opts.prompts_file)
    formatter = PromptFormatter(opts.template, tokenizer)  # r1_zero, chat or raw
    rendered = [formatter({"prompt": t}) for t in texts]
    prompts = [encode_prompt(tokenizer, t) for t in rendered]
    stop_ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    slots = dict(slots=opts.slots, min_slots=opts.min_slots)
    slots |= dict(page_size=opts.page_size, pages=opts.pages)
    out = Sampler(model_config, mesh=mesh, pad_id=tokenizer.pad_id, **slots)(
        params,
        prompts,
        rng=jax.random.key(opts.seed),
        num_samples=opts.num_samples,
        max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature,
        top_k=opts.top_k,
        top_p=opts.top_p,
        greedy=opts.greedy,
        stop_token_ids=stop_ids,
        stop_strings=opts.stop_strings,
        tokenizer=tokenizer,
    )
    if not distributed.is_main_process():
        return 0
    sink = open(output, "w") if output else sys.stdout  # noqa: SIM115
    try:
        for row, ids in enumerate(out.completions()):
            i = int(out.prompt_index[row])
            record = dict(
                prompt_index=i,
                sample=row % opts.num_samples,
                prompt=texts[i],
                completion=tokenizer.decode(ids, skip_special=True),
                tokens=ids,
                logprobs=[round(float(x), 6) for x in out.logprobs[row, : len(ids)]],
                length=int(out.lengths[row]),
                finish_reason=str(out.finish_reason[row]),
            )
            sink.write(json.dumps(record) + "\n")
    finally:
        if sink is not sys.stdout:
            sink.close()
    if output:
        print(f"wrote {len(out.lengths)} completions to {output}", file=sys.stderr)
    return 0
