"""A reward model as a GRPO reward: a jitted batched scorer on the mesh, routed per example.

``ModelScorer`` scores (prompt text, completion) pairs with a reward model
(``r1jax.model.reward``) in one jitted call per batch, sharded over the mesh's batch axes like
the train step; ``MixedReward`` puts it next to the rule rewards (``CompositeReward``, whose
process pool it keeps) behind the same ``evaluate`` the rollout stage calls:

    reward = MixedReward(CompositeReward.from_config(...), scorer, RewardModelConfig(...))
    result = reward.evaluate(prompts, completions, **fields)   # a RewardResult

Each row goes where its example's ``reward`` field says ("rules" or "model"; absent: the
config's ``default_route``): a rules row's total is the rule components' weighted sum; a model
row's is ``weight x score`` plus the ``add_rules`` components (format, language) with their
weights. Components add ``"model"`` (the score on model rows, 0 elsewhere) and
``"model_routed"`` (1 on model rows), so the logs show both.

Shapes: R rows scored per call; each row is BOS + ``tokens(prompt text) + tokens(completion) + EOS``
right-padded to a width W (the smallest power of two >= 64 holding the batch's longest row,
capped at ``max_length``: one compile per width); rows longer than ``max_length`` keep their
LAST ``max_length`` tokens (the response's end, where the model reads its score).
"""

from __future__ import annotations

import jax
import numpy as np

from r1jax import multihost
from r1jax.config.schema import RewardModelConfig
from r1jax.data.templates import encode_prompt
from r1jax.model import ModelConfig, param_shardings
from r1jax.model.reward import sequence_scores
from r1jax.rewards.compose import RewardResult
from r1jax.train.step import batch_sharding

ROUTES = ("rules", "model")


def score_width(longest: int, max_length: int) -> int:
    """The padded width of a batch whose longest row has ``longest`` tokens."""
    width = 64
    while width < longest:
        width *= 2
    return min(width, max_length)


class ModelScorer:
    """``score(prompt_texts, completions) -> f32 [R]`` with a reward model on ``mesh``.

    ``params``: the reward model's (``config.score_head``), placed by the model's rules;
    ``tokenizer``: the policy's (prompt texts are the templated prompts it sampled from).
    With several processes each passes its own rows (a collective: every process calls it).
    """

    def __init__(self, config: ModelConfig, params, mesh, tokenizer, max_length: int):
        if not config.score_head:
            raise ValueError("ModelScorer: the model has no score head (not a reward model)")
        if tokenizer.eos_id is None:
            raise ValueError("ModelScorer: the tokenizer has no EOS (the row a score is read at)")
        self.config, self.params, self.mesh = config, params, mesh
        self.tokenizer, self.max_length = tokenizer, max_length
        self._fn = jax.jit(
            lambda p, tokens, last: sequence_scores(p, tokens, last, config),
            in_shardings=(
                param_shardings(config, mesh),
                batch_sharding(mesh),
                batch_sharding(mesh),
            ),
            out_shardings=batch_sharding(mesh),
        )

    def rows(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [R, W], last int32 [R]) of this process's rows (module docstring):
        tokenised as the preference data is (``r1jax.data.preferences``: BOS, the templated
        prompt, the response, EOS), so the model scores rows like those it was trained on."""
        tok = self.tokenizer
        ids = [
            encode_prompt(tok, p, add_bos=True) + tok.encode(c) + [tok.eos_id]
            for p, c in zip(prompts, completions, strict=True)
        ]
        ids = [row[-self.max_length :] for row in ids]
        width = score_width(max(len(row) for row in ids), self.max_length)
        tokens = np.full((len(ids), width), self.tokenizer.pad_id, np.int32)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = row
        return tokens, np.asarray([len(row) - 1 for row in ids], np.int32)

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        tokens, last = self.rows(prompts, completions)
        if jax.process_count() > 1:  # rows of every process -> one global batch
            width = int(multihost.gather_rows(np.asarray([tokens.shape[1]])).max())
            tokens = np.pad(tokens, ((0, 0), (0, width - tokens.shape[1])))
            tokens, last = multihost.host_local_to_global((tokens, last), self.mesh)
        else:
            tokens, last = jax.device_put((tokens, last), batch_sharding(self.mesh))
        with jax.set_mesh(self.mesh):
            scores = self._fn(self.params, tokens, last)
        if jax.process_count() > 1:
            return multihost.data_shard_rows(scores, self.mesh)
        return np.asarray(jax.device_get(scores), np.float32)


class MixedReward:
    """Rule rewards and a reward model behind one ``evaluate`` (module docstring)."""

    def __init__(self, rules, scorer: ModelScorer, options: RewardModelConfig):
        labels = {spec.label: spec.weight for spec in rules.specs}
        missing = [name for name in options.add_rules if name not in labels]
        if missing:
            raise ValueError(
                f"config.reward_model.add_rules names {missing}, not components of "
                f"config.rewards ({sorted(labels)})"
            )
        self.rules, self.scorer, self.options = rules, scorer, options
        self.added = {name: labels[name] for name in options.add_rules}

    @property
    def specs(self):
        return self.rules.specs

    def routes(self, fields: dict, n: int) -> np.ndarray:
        """bool [R]: the rows judged by the model."""
        values = fields.get("reward") or [None] * n
        origins = fields.get("_origin") or [None] * n
        out = np.zeros(n, bool)
        for i, (value, origin) in enumerate(zip(values, origins, strict=True)):
            route = value or self.options.default_route
            if route not in ROUTES:
                where = f"{origin}: " if origin else ""
                raise ValueError(f"{where}field 'reward' is {value!r}; one of {ROUTES}")
            out[i] = route == "model"
        return out

    def evaluate(self, prompts: list[str], completions: list[str], **fields) -> RewardResult:
        result = self.rules.evaluate(prompts, completions, **fields)
        model_rows = self.routes(fields, len(completions))
        scores = self.scorer.score(prompts, completions)  # a collective: every row, every time
        total = np.asarray(result.total, np.float64)
        model_total = self.options.weight * scores.astype(np.float64)
        for name, weight in self.added.items():
            model_total += weight * np.asarray(result.components[name], np.float64)
        total = np.where(model_rows, model_total, total)
        components = dict(result.components)
        components["model"] = np.where(model_rows, scores, 0.0).tolist()
        components["model_routed"] = model_rows.astype(np.float64).tolist()
        return RewardResult(
            total.tolist(), components, result.timeouts, result.errors, result.incidents
        )

    def close(self) -> None:
        self.rules.close()
