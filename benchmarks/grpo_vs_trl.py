"""One full GRPO iteration with r1jax and with TRL's ``GRPOTrainer`` on the identical tiny Qwen2.

    python benchmarks/grpo_vs_trl.py                 # both; TRL is skipped if not installed
    python benchmarks/grpo_vs_trl.py --steps 8 --warmup 2 --skip-trl

An iteration: sample G=8 completions for each of 8 prompts (64 new tokens each, no early stop),
score them with the same Python reward, compute group advantages, take one optimizer step
(AdamW, beta = 0 so no reference model, token-mean "DAPO" loss in both; r1jax's update runs
each prompt once for its G rows as ``r1jax train`` does, ``--share-prompts off`` runs it in
every row as TRL does; its 4 layers run unrolled, ``model.scan_unroll=4``, ``--scan-unroll 1``
scans them). The model is a random
Qwen2 (hidden 256, 4 layers, 4 query / 2 KV heads, vocab ~1000) saved once as a Hugging Face
checkpoint and loaded by both, with a word-level tokenizer built here with ``tokenizers``
(no downloads). Everything runs in fp32 on the CPU. Reported: steady-state seconds per iteration
(median after warm-up; r1jax's compile happens in the warm-up; r1jax is timed before and after
TRL so that a drift in machine load biases neither) and the TRL / r1jax ratio. Rewards are
scored in-process on both sides (as TRL does); ``r1jax train`` scores in the reward pool.

Both run in one process under the same host allocator: glibc malloc on transparent huge pages
(``r1jax.host_malloc``; ``R1JAX_HOST_MALLOC=0`` for plain malloc).

TRL is an optional dependency: ``pip install trl --no-deps accelerate datasets`` (``--no-deps``
keeps the installed torch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB_WORDS = 996  # + 4 specials = a vocabulary of 1000
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def build_tokenizer(directory: Path):
    """A word-level ``tokenizer.json`` (w0..w995 + specials); returns its transformers wrapper."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(VOCAB_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(str(directory / "tokenizer.json"))
    return hf_tokenizer(directory)


def hf_tokenizer(directory: Path):
    """The transformers tokenizer of ``tokenizer.json``, built directly: ``AutoTokenizer`` next
    to a Qwen2 config.json would rebuild it as a (BPE) Qwen2Tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"),
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )


def build_model(directory: Path, vocab_size: int, seed: int = 0) -> None:
    """A random Qwen2 (hidden 256, 4 layers, 4/2 heads) saved as safetensors + config.json."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    Qwen2ForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)


def make_prompts(num_prompts: int, length: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(f"w{i}" for i in rng.integers(0, VOCAB_WORDS, length)) for _ in range(num_prompts)
    ]


def reward_fn(prompts, completions, **kwargs) -> list[float]:
    """Share of completion words whose index is even (cheap, and varies within a group)."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else c[-1]["content"]
        words = [w for w in text.split() if w.startswith("w") and w[1:].isdigit()]
        out.append(sum(int(w[1:]) % 2 == 0 for w in words) / max(len(words), 1))
    return out


class InProcessReward:
    """``evaluate`` around ``reward_fn``, scored in this process like TRL does."""

    def evaluate(self, prompts, completions, **fields):
        from r1jax.rewards.compose import RewardResult

        scores = reward_fn(prompts, completions)
        return RewardResult(scores, {"even": scores}, 0, 0, {})


def bench_r1jax(directory: Path, prompts: list[str], args):
    """Builds the r1jax GRPO iteration; returns ``run_steps(n) -> seconds of each step``."""
    import jax

    from r1jax.config import GRPOConfig, MeshConfig, OptimConfig
    from r1jax.data import HFTokenizer
    from r1jax.model import hf
    from r1jax.sampling import Sampler
    from r1jax.sharding import make_mesh
    from r1jax.train import objectives
    from r1jax.train.grpo import GRPOParts, grpo_iteration
    from r1jax.train.optim import make_optimizer
    from r1jax.train.prompt_sharing import prompt_groups
    from r1jax.train.state import create_train_state
    from r1jax.train.step import make_logprobs_fn, make_train_step

    mesh = make_mesh(MeshConfig())
    config, params = hf.load(str(directory), mesh=mesh)
    config = config.replace(scan_unroll=args.scan_unroll)
    tokenizer = HFTokenizer(str(directory / "tokenizer.json"))
    ids = [tokenizer.encode(p) for p in prompts]
    width = max(map(len, ids))
    batch = {
        "prompt_tokens": np.array([[0] * (width - len(i)) + i for i in ids], np.int32),
        "prompt_mask": np.array([[0] * (width - len(i)) + [1] * len(i) for i in ids], np.int32),
        "prompts": prompts,
        "fields": {},
    }
    grpo = GRPOConfig(
        num_prompts=len(prompts),
        num_samples=args.num_generations,
        max_new_tokens=args.max_new_tokens,
        stop_at_eos=False,
        stop_strings=(),
        beta=0.0,
        aggregation="token_mean",
        log_entropy=False,
        share_prompts=args.share_prompts,
    )
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-6, schedule="constant"))
    reward = InProcessReward()
    # As ``r1jax train`` decides it: the G rows of a prompt share its forward in the update.
    groups = prompt_groups(grpo, config, mesh, max_length=width + args.max_new_tokens)
    print(f"r1jax: prompt sharing in the update: {'on' if groups > 1 else 'off'}", flush=True)
    parts = GRPOParts(
        sampler=Sampler(config, mesh=mesh, pad_id=0, buckets=(16, 32, 64, 128)),
        reward=reward,
        tokenizer=tokenizer,
        step_fn=make_train_step(config, objectives.grpo(config, grpo, groups), optimizer, mesh),
        logprobs_fn=make_logprobs_fn(config, mesh, prompt_groups=groups),
        grpo=grpo,
        prompt_groups=groups,
    )
    box = {"state": create_train_state(config, optimizer, jax.random.key(0), mesh, params=params)}
    data = iter(lambda: dict(batch), None)

    def run_steps(n: int) -> list[float]:
        """Seconds of each of ``n`` more iterations (stage times of the last one printed)."""
        times = []
        for _ in range(n):
            step = int(box["state"].step)
            start = time.perf_counter()
            box["state"], metrics = grpo_iteration(box["state"], data, parts, step)
            jax.block_until_ready(box["state"].params)
            times.append(time.perf_counter() - start)
            assert metrics["response_length/mean"] == args.max_new_tokens
        stages = {k[5:]: round(v, 3) for k, v in metrics.items() if k.startswith("time/")}
        print(f"r1jax stages (last step, s): {stages}", flush=True)
        return times

    return run_steps


def bench_trl(directory: Path, prompts: list[str], args) -> list[float] | None:
    """Seconds of each TRL ``GRPOTrainer`` step, or None when TRL is not installed."""
    try:
        import trl  # noqa: F401
    except ImportError:
        print("TRL is not installed: skipping it (pip install trl --no-deps accelerate datasets)")
        return None
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

    steps = args.warmup + args.steps
    config = GRPOConfig(
        output_dir=str(directory / "trl_out"),
        per_device_train_batch_size=len(prompts) * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_new_tokens,
        generation_kwargs={"min_new_tokens": args.max_new_tokens},
        learning_rate=1e-6,
        beta=0.0,
        loss_type="dapo",
        max_steps=steps,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        shuffle_dataset=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32),
        reward_funcs=reward_fn,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts * steps}),
        processing_class=hf_tokenizer(directory),
        callbacks=[Timer()],
    )
    trainer.train()
    return times


def summary(times: list[float] | None, warmup: int) -> float | None:
    return None if not times else statistics.median(times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for TRL")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-r1jax", action="store_true")
    parser.add_argument(
        "--scan-unroll", type=int, default=4, help="model.scan_unroll (4: the layers unrolled)"
    )
    parser.add_argument("--share-prompts", default="auto", help="config.grpo.share_prompts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        tokenizer = build_tokenizer(directory)
        build_model(directory, len(tokenizer))
        prompts = make_prompts(args.num_prompts, args.prompt_length)
        results = {}
        # r1jax before and after TRL, so that a drift in machine load biases neither side.
        run_r1jax = None if args.skip_r1jax else bench_r1jax(directory, prompts, args)
        r1jax_times = run_r1jax(args.warmup + args.steps)[args.warmup :] if run_r1jax else []
        if not args.skip_trl:
            results["trl_s_per_step"] = summary(bench_trl(directory, prompts, args), args.warmup)
        if run_r1jax:
            r1jax_times += run_r1jax(args.steps)
            results["r1jax_s_per_step"] = statistics.median(r1jax_times)
    r1, trl_s = results.get("r1jax_s_per_step"), results.get("trl_s_per_step")
    if r1 and trl_s:
        results["trl_over_r1jax"] = trl_s / r1
    results["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")  # see r1jax/host_malloc.py
    print(json.dumps({**vars(args), **results}, indent=1))


if __name__ == "__main__":
    from r1jax import host_malloc

    host_malloc.ensure()  # huge-page malloc for XLA:CPU (R1JAX_HOST_MALLOC=0: off)
    main()
