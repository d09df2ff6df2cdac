"""A reward model (Bradley–Terry on preference pairs) of the tiny model, on CPU.

Run:
  r1jax train --config=configs/reward_model_tiny.py --workdir=/tmp/r1jax_rm_tiny

The built-in ``arithmetic_preferences`` task pairs each worked, correct solution with a wrong
answer, a hasty guess or an untagged answer; the evaluation hook reports the pairwise accuracy
on held-out pairs (``eval/accuracy``, and per kind): about 0.83 from scratch, where a wrong final
answer stays near chance; started from a base that can do the sums (``configs/r1_full.py:tiny``'s
reward_model stage) it reaches 0.91. Your own data: ``--config.data.path=`` JSONL
of ``{"prompt", "chosen", "rejected"}`` rows with ``--config.data.tokenizer=`` and
``--config.eval.path=`` held-out pairs. ``--config.init_from=`` a policy (r1jax run or HF
directory) starts from its trunk with a fresh score head. GRPO then uses the model through
``--config.reward_model_from=<this workdir>`` (examples routed by their ``reward`` field).
"""

from r1jax.config import presets


def get_config():
    config = presets.tiny("reward_model")
    config.data.task = "arithmetic_preferences"
    config.train.update(steps=300, batch_size=16, seq_len=192, eval_every=100, log_every=25)
    config.optim.update(learning_rate=3e-3, warmup_steps=20, weight_decay=0.01)
    config.eval.num_prompts = 256
    return config
