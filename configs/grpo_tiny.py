"""R1-Zero-style GRPO of the tiny model on the built-in arithmetic task, on CPU (no downloads).

Run:
  r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_grpo_tiny
  r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_grpo_tiny \\
      --config.train.steps=5 --config.grpo.num_prompts=2 --config.grpo.max_new_tokens=16

Re-running with the same --workdir resumes from the latest checkpoint (reference params and data
position included). From a random init the accuracy stays near 0: this config shows the loop
(start from an SFT checkpoint, as the demo does, for a policy that can learn). Metrics go to
<workdir>/metrics.jsonl and <workdir>/tb.

DAPO-style switches (all in config.grpo): dynamic_sampling=True, mask_truncated=True,
overlong_cache=<tokens>, eps_high=0.28, aggregation="token_mean"; GSPO: importance="sequence";
Dr. GRPO: advantage_scale="none", aggregation="constant" with max_tokens; TIS: tis_cap=2.0.
"""

import ml_collections

from r1jax.train import config_presets


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = config_presets.tiny_model()
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.optim = config_presets.optim(
        learning_rate=1e-4, warmup_steps=0, total_steps=100, weight_decay=0.0
    )
    config.train = config_presets.train(
        objective="grpo", steps=20, log_every=1, checkpoint_every=10, eval_every=10
    )
    config.data = config_presets.task_data("arithmetic", task_options={"max_operands": 2})
    config.grpo = ml_collections.ConfigDict(
        dict(
            # rollout
            num_prompts=4,  # groups per update; the batch has num_prompts * num_samples rows
            num_samples=8,  # G
            max_new_tokens=48,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            stop_strings=("</answer>",),
            stop_at_eos=True,
            dynamic_sampling=False,
            max_sampling_rounds=4,
            mask_truncated=False,
            overlong_cache=0,
            overlong_weight=1.0,
            advantage_scale="group",  # "group" | "batch" | "none" (Dr. GRPO)
            advantage_baseline="mean",  # "mean" | "leave_one_out"
            keep_sampler_logprobs=False,
            # loss
            beta=0.001,  # R1's KL weight; 0 keeps no reference params
            eps_low=0.2,
            eps_high=None,  # DAPO clip-higher: 0.28
            aggregation="seq_mean",  # "seq_mean" | "token_mean" (DAPO) | "constant" (Dr. GRPO)
            max_tokens=None,
            importance="token",  # "token" | "sequence" (GSPO)
            entropy_coef=0.0,
            tis_cap=None,  # truncated importance sampling (sampler vs trainer log-probs)
            log_entropy=True,
            # loop
            mu=1,  # inner updates per batch of rollouts
            ref_refresh_every=0,
            accuracy_key="accuracy",
            format_key="format",
        )
    )
    config.rewards = ml_collections.ConfigDict(
        {"accuracy": {"weight": 1.0}, "format": {"weight": 0.5}}
    )
    config.reward_pool = ml_collections.ConfigDict(dict(num_workers=2, item_timeout=10.0))
    config.eval = ml_collections.ConfigDict(
        dict(num_prompts=8, num_samples=4, temperature=0.6, top_p=0.95, seed=1)
    )
    return config
