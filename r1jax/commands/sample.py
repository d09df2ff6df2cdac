"""``r1jax sample``: sample completions for prompts from a checkpoint and print or write them.

r1jax sample --checkpoint ckpt/ --prompt "What is 2+3?" --num-samples 4 --temperature 0.7
r1jax sample --checkpoint ckpt/ --prompts-file prompts.jsonl --output out.jsonl --greedy

The checkpoint is opened by ``r1jax.checkpoint.load_params`` (an r1jax run directory or a
Hugging Face directory, detected by content). Each output JSONL line holds the prompt, the
completion text and ids, the per-token log-probs, length and finish reason.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax

from r1jax.checkpoint import find_tokenizer, load_params
from r1jax.data import format_r1_zero, load_tokenizer
from r1jax.data.templates import encode_prompt
from r1jax.sampling import Sampler
from r1jax.sharding import MeshConfig, make_mesh


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
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file F.jsonl")
    return texts


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="r1jax sample", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory")
    ap.add_argument("--format", default="auto", help="checkpoint format (default: detect)")
    ap.add_argument("--tokenizer", help="tokenizer file or directory (default: --checkpoint)")
    ap.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
    ap.add_argument("--prompts-file", help="JSONL file with a 'prompt' field per line")
    ap.add_argument("--template", choices=["r1_zero", "raw"], default="r1_zero")
    ap.add_argument("--num-samples", type=int, default=1, help="G completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0, help="0 = off")
    ap.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mesh", default="", help="data,fsdp,tensor sizes, e.g. 4,1,2")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype override")
    ap.add_argument("--output", help="write JSONL here (default: print to stdout)")
    return ap


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    mesh = make_mesh(MeshConfig(*map(int, args.mesh.split(",")))) if args.mesh else None
    overrides = {"compute_dtype": args.dtype} if args.dtype else {}
    config, params = load_params(args.checkpoint, mesh=mesh, format=args.format, **overrides)
    tokenizer_path = args.tokenizer or find_tokenizer(args.checkpoint)
    if tokenizer_path is None:
        raise FileNotFoundError(f"no tokenizer found next to {args.checkpoint}: pass --tokenizer")
    tokenizer = load_tokenizer(str(tokenizer_path))
    texts = read_prompts(args.prompt, args.prompts_file)
    rendered = [format_r1_zero(t) if args.template == "r1_zero" else t for t in texts]
    prompts = [encode_prompt(tokenizer, t) for t in rendered]
    stop_strings = args.stop if args.stop is not None else ["</answer>"]
    stop_ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    out = Sampler(config, mesh=mesh, pad_id=tokenizer.pad_id)(
        params,
        prompts,
        rng=jax.random.key(args.seed),
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        greedy=args.greedy,
        stop_token_ids=stop_ids,
        stop_strings=stop_strings,
        tokenizer=tokenizer,
    )
    sink = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    try:
        for row, ids in enumerate(out.completions()):
            i = int(out.prompt_index[row])
            record = dict(
                prompt_index=i,
                sample=row % args.num_samples,
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
    if args.output:
        print(f"wrote {len(out.lengths)} completions to {args.output}", file=sys.stderr)
    return 0
