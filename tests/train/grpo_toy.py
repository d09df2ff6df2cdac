"""A toy GRPO world shared by the GRPO tests: a 16-token vocabulary, a character tokenizer, a
reward "emit token X" and a 1-layer model small enough to learn it on CPU in seconds."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.config import GRPOConfig, OptimConfig
from r1jax.model import ModelConfig
from r1jax.rewards.compose import RewardResult
from r1jax.sampling import Sampler
from r1jax.sharding import MeshConfig, make_mesh
from r1jax.train import objectives
from r1jax.train.grpo import GRPOParts
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state, refresh_frozen
from r1jax.train.step import make_logprobs_fn, make_train_step

VOCAB = 16
TARGET = 3  # the token the toy reward pays for
PROMPT_LEN = 4
CONFIG = ModelConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=2,
    head_dim=16,
    mlp_dim=64,
    tie_embeddings=False,
    max_position_embeddings=64,
)


class CharTokenizer:
    """id i <-> the letter chr(ord('a') + i); no special tokens."""

    vocab_size, pad_id, bos_id, eos_id = VOCAB, 0, None, None

    def decode(self, ids, *, skip_special=True):
        return "".join(chr(ord("a") + int(i)) for i in ids)

    def encode(self, text, *, add_bos=False):
        return [ord(c) - ord("a") for c in text]


def emit_target(prompts, completions, **fields):
    """Fraction of the completion's tokens that are the target token X."""
    x = CharTokenizer().decode([TARGET])
    return [c.count(x) / max(len(c), 1) for c in completions]


class InlineReward:
    """``evaluate`` like ``CompositeReward`` with one component, in-process."""

    def __init__(self, fn=emit_target, name="emit"):
        self.fn, self.name, self.calls = fn, name, []

    def evaluate(self, prompts, completions, **fields):
        self.calls.append({"prompts": prompts, "completions": completions, **fields})
        scores = [float(s) for s in self.fn(prompts, completions, **fields)]
        return RewardResult(scores, {self.name: scores}, 0, 0, {})


def prompt_batches(num_prompts: int, seed: int = 0):
    """Endless ``make_rl_dataset``-shaped batches of random prompts (ids 4..15)."""
    rng = np.random.default_rng(seed)
    while True:
        tokens = rng.integers(4, VOCAB, (num_prompts, PROMPT_LEN)).astype(np.int32)
        yield {
            "prompt_tokens": tokens,
            "prompt_mask": np.ones_like(tokens),
            "valid": np.ones(num_prompts, bool),
            "prompts": [CharTokenizer().decode(t) for t in tokens],
            "fields": {"prompt_id": [str(t.tolist()) for t in tokens]},
            "stats": {},
        }


def one_device_mesh():
    return make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])


@functools.cache
def _mesh():
    return one_device_mesh()


@functools.cache
def _sampler():
    return Sampler(CONFIG, mesh=_mesh(), buckets=(PROMPT_LEN,))


# The toy run's GRPO section; ``toy(**changes)`` varies it (explicit beta: no reference).
TOY = GRPOConfig(
    num_prompts=4, num_samples=8, max_new_tokens=6, stop_at_eos=False, stop_strings=(), beta=0.0
)
LOSS_FIELDS = (
    "beta", "eps_low", "eps_high", "aggregation", "max_tokens", "importance", "temperature",
    "entropy_coef", "tis_cap", "log_entropy",
)  # fmt: skip


def toy(**changes) -> GRPOConfig:
    return dataclasses.replace(TOY, **changes)


def _loss_options(grpo: GRPOConfig) -> GRPOConfig:
    """``grpo`` with only the loss's fields kept (the compile cache's key)."""
    return toy(**{name: getattr(grpo, name) for name in LOSS_FIELDS})


@functools.cache
def _compiled(loss: GRPOConfig, num_microbatches: int, learning_rate: float):
    """(optimizer, step_fn, logprobs_fn), shared by every test with the same options: each
    distinct set compiles once per session."""
    optimizer = make_optimizer(
        OptimConfig(learning_rate=learning_rate, schedule="constant", b2=0.99)
    )
    step_fn = make_train_step(
        CONFIG,
        objectives.grpo(CONFIG, loss),
        optimizer,
        _mesh(),
        num_microbatches=num_microbatches,
        frozen_config=CONFIG if loss.beta > 0 else None,
    )
    logprobs_fn = make_logprobs_fn(CONFIG, _mesh(), temperature=loss.temperature)
    return optimizer, step_fn, logprobs_fn


@functools.cache
def _initial_state(learning_rate: float, seed: int):
    optimizer = _compiled(TOY, 1, learning_rate)[0]
    return create_train_state(CONFIG, optimizer, jax.random.key(seed), _mesh())


def make_parts(
    *,
    reward=None,
    grpo: GRPOConfig = TOY,
    learning_rate: float = 1e-2,
    num_microbatches: int = 1,
    seed: int = 0,
):
    """(state, parts) of a toy GRPO run: a fresh copy of the initial state (the step donates
    it), compiled functions shared between calls."""
    _, step_fn, logprobs_fn = _compiled(_loss_options(grpo), num_microbatches, learning_rate)
    state = jax.tree.map(jnp.copy, _initial_state(learning_rate, seed))
    if grpo.beta > 0:
        state = refresh_frozen(state)
    parts = GRPOParts(
        sampler=_sampler(),
        reward=reward or InlineReward(),
        tokenizer=CharTokenizer(),
        step_fn=step_fn,
        logprobs_fn=logprobs_fn,
        grpo=grpo,
    )
    return state, parts


def replace(obj, **kw):
    return dataclasses.replace(obj, **kw)


@dataclasses.dataclass(frozen=True)
class EmitTarget:
    """``emit_target`` as a registrable reward (picklable into the reward pool's workers)."""

    def __call__(self, prompts, completions, **fields):
        return emit_target(prompts, completions, **fields)


def composite_reward(num_workers: int = 1):
    """A ``CompositeReward`` whose one component, "emit", is ``EmitTarget`` (via the registry)."""
    from r1jax.rewards import compose, registry

    registry.REWARDS.setdefault("emit_target", EmitTarget)
    spec = compose.RewardSpec("emit_target", key="emit")
    return compose.CompositeReward([spec], num_workers=num_workers, chunk_size=64)
