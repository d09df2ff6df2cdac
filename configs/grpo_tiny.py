"""R1-Zero-style GRPO of the tiny model on the built-in arithmetic task, on CPU (no downloads).

Run:
  r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_grpo_tiny
  r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_grpo_tiny \\
      --config.train.steps=5 --config.grpo.num_prompts=2 --config.grpo.max_new_tokens=16
  r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/dapo --config.grpo.variant=dapo

Re-running with the same --workdir resumes from the latest checkpoint (reference params and data
position included). From a random init the accuracy stays near 0: this config shows the loop
(start from an SFT checkpoint, as the demo does, for a policy that can learn). Metrics go to
<workdir>/metrics.jsonl and <workdir>/tb.

GRPO variants are one override: ``--config.grpo.variant=dapo`` (clip-higher, dynamic sampling,
token-level loss, soft overlong penalty, no KL), ``dr_grpo``, ``gspo``; the table is
``r1jax.config.schema.VARIANTS`` and any explicit ``--config.grpo.<key>`` still wins.
"""

from r1jax.config import presets


def get_config():
    config = presets.tiny("grpo")
    config.grpo.num_samples = 8  # R1 samples 16 per question; 8 keeps this CPU run quick
    config.optim.update(learning_rate=1e-4, total_steps=100)
    config.train.update(steps=20, log_every=1, checkpoint_every=10, eval_every=10)
    config.data.task_options = dict(max_operands=2, reward_route="")  # "mixed": half to a model
    config.eval.update(num_prompts=8, num_samples=4, max_new_tokens=48, seed=1)
    return config
