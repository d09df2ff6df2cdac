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
    config.grpo = config_presets.grpo()
    config.rewards = ml_collections.ConfigDict(
        {"accuracy": {"weight": 1.0}, "format": {"weight": 0.5}}
    )
    config.reward_pool = ml_collections.ConfigDict(dict(num_workers=2, item_timeout=10.0))
    config.eval = ml_collections.ConfigDict(
        dict(num_prompts=8, num_samples=4, temperature=0.6, top_p=0.95, seed=1)
    )
    return config
