"""The four-stage DeepSeek-R1 recipe, then distillation into a student, as one recipe.

  r1jax demo --config=configs/r1_full.py:tiny          # the miniature on CPU (built-in tasks)
  r1jax demo --config=configs/r1_full.py:tiny_zh       # the same in Chinese
  r1jax demo --config=configs/r1_full.py:smoke         # a plumbing check (also "smoke_zh")
  r1jax demo --config=configs/r1_full.py:7b --run_dir=gs://BUCKET/r1_7b \\
      --config.cold_start.data.path=/data/cold_start.jsonl \\
      --config.reasoning_rl.data.path=/data/math_prompts.jsonl \\
      --config.rejection.eval.path=/data/math_prompts.jsonl \\
      --config.sft_all.data.path=/data/non_reasoning_sft.jsonl \\
      --config.reward_model.data.path=/data/preferences.jsonl \\
      --config.reward_model.eval.path=/data/preferences_heldout.jsonl \\
      --config.rl_all.data.path=/data/all_scenarios_prompts.jsonl \\
      --config.distill_data.eval.path=/data/math_prompts.jsonl
  The bases are read from ``/models/Qwen2.5-7B`` (or -1.5B) and the student's from
  ``/models/Qwen2.5-1.5B`` (Hugging Face directories; override ``<stage>.init_from`` and
  ``<stage>.data.tokenizer``); r1jax never downloads. A stage's ``data.path`` may list several
  sources separated by commas; sft_all's is added to the rejection traces.

Stages (R1, section 2.3; each stage's data and reward):
  cold_start    SFT of the base on a few thousand long, readable chains of thought
                (``{prompt, think, answer}`` / ``{prompt, completion}`` JSONL). Loss: next token.
  reasoning_rl  GRPO from cold_start on reasoning prompts with verifiable answers
                (``{prompt, answer}``): accuracy + format + language consistency (R1's fix for
                mixed languages; the target is each example's ``language`` field).
  rejection     samples reasoning_rl on the reasoning prompts and keeps correct, readable
                traces (R1's filters: mixed language, long paragraphs, code blocks).
  sft_all       SFT of the BASE (R1 restarts from V3-Base) on those traces plus non-reasoning
                data (writing, QA, translation: ``data.path``), two epochs in R1.
  reward_model  a Bradley-Terry reward model on human preference pairs
                (``{prompt, chosen, rejected}``), from the base's trunk with a score head.
  rl_all        GRPO from sft_all on prompts of all scenarios: an example's ``reward`` field
                routes it to the rule rewards ("rules": reasoning) or to the reward model
                ("model": general helpfulness), with format and language on both.
  distill_data  rejection sampling of rl_all: the traces students learn from (R1: 800k).
  student       SFT of a smaller base on them (R1's distilled Qwen/Llama models: SFT only).
  eval_*        pass@1 over k samples (T 0.6, top-p 0.95) of rl_all and of the student.

The miniature runs every stage on the built-in arithmetic task (``reward_route="mixed"`` in
rl_all: half of its prompts are judged by the reward model trained on
``arithmetic_preferences``), with a "base" pretrained on a corpus of worked and hasty
solutions first; ``:smoke`` shrinks every stage to a few steps.
"""

import ml_collections

from r1jax.config import defaults, presets

TASK_OPTIONS = dict(min_operands=2, max_operands=2, max_digits=1, ops="+-")
BASES = {"1.5b": presets.QWEN2_5_1_5B, "7b": presets.QWEN2_5_7B}
BASE_DIRS = {"1.5b": "/models/Qwen2.5-1.5B", "7b": "/models/Qwen2.5-7B"}
STAGES = (
    "cold_start,reasoning_rl,rejection,sft_all,reward_model,rl_all,eval_r1,distill_data,"
    "student,eval_student"
)
MINI_STAGES = "tokenizer,base,student_base," + STAGES


def get_config(variant: str = "7b") -> ml_collections.ConfigDict:
    if variant in BASES:
        return _real(variant)
    if variant not in ("tiny", "tiny_zh", "smoke", "smoke_zh"):
        raise ValueError(f"configs/r1_full.py:{variant}: one of {sorted(BASES)}, tiny, smoke[_zh]")
    return _miniature(smoke=variant.startswith("smoke"), chinese=variant.endswith("_zh"))


# ------------------------------------------------------------------------- real bases


def _real_stage(kind, base, directory, **changes):
    stage = presets.pretrained_family(base, kind=kind)
    stage.model.remat_policy = "full"
    stage.data.update(task="", tokenizer=directory)  # the user's data, the base's tokenizer
    stage.update(changes)
    return stage


def _real(variant):
    base, home = BASES[variant], BASE_DIRS[variant]
    config = ml_collections.ConfigDict()
    config.run_dir = f"runs/r1_full_{variant}"
    config.stages = STAGES
    config.cold_start = _real_stage("sft", base, home, init_from=home)
    config.cold_start.train.update(steps=1000, batch_size=64, seq_len=8192, checkpoint_every=200)
    config.cold_start.optim.update(learning_rate=1e-5, warmup_steps=50, weight_decay=0.1)
    config.reasoning_rl = _real_stage("grpo", base, home, init_from="cold_start")
    _rl(config.reasoning_rl, steps=2000)
    config.rejection = _eval(defaults("rejection_sample"), "reasoning_rl", 8, 16384)
    config.sft_all = _real_stage("sft", base, home, init_from=home, data_from="rejection")
    config.sft_all.train.update(steps=5000, batch_size=64, seq_len=16384, checkpoint_every=500)
    config.sft_all.optim.update(learning_rate=1e-5, warmup_steps=100, weight_decay=0.1)
    config.reward_model = _real_stage("reward_model", base, home, init_from=home)
    config.reward_model.train.update(steps=2000, batch_size=64, seq_len=4096, eval_every=500)
    config.reward_model.optim.update(learning_rate=5e-6, warmup_steps=50, weight_decay=0.1)
    config.rl_all = _real_stage(
        "grpo", base, home, init_from="sft_all", reward_model_from="reward_model"
    )
    _rl(config.rl_all, steps=1000)
    config.rl_all.reward_model.add_rules = ("format", "language")
    config.eval_r1 = _eval(defaults("eval"), "rl_all", 16, 32768)
    config.distill_data = _eval(defaults("rejection_sample"), "rl_all", 4, 32768)
    student_home = BASE_DIRS["1.5b"]
    config.student = _real_stage(
        "sft", presets.QWEN2_5_1_5B, student_home, init_from=student_home,
        data_from="distill_data",
    )  # fmt: skip
    config.student.train.update(steps=5000, batch_size=64, seq_len=16384, checkpoint_every=500)
    config.student.optim.update(learning_rate=1e-5, warmup_steps=100, weight_decay=0.1)
    config.eval_student = _eval(defaults("eval"), "student", 16, 32768)
    return config


def _rl(stage, steps):
    """R1's GRPO settings (G 16, beta 0.001, T 1.0: the "r1" variant) with the language
    reward; 32k-token chains of thought."""
    stage.grpo.update(num_prompts=32, max_new_tokens=32768 - 1024)
    stage.data.buckets = (1024,)
    stage.rewards.language = dict(weight=0.1)
    stage.optim.update(learning_rate=3e-6, schedule="constant", weight_decay=0.1)
    stage.train.update(steps=steps, num_microbatches=16, log_every=1, checkpoint_every=50)


def _eval(stage, model_from, k, tokens):
    stage.model_from = model_from
    stage.eval.update(num_samples=k, max_new_tokens=tokens, prompts_per_batch=64)
    return stage


# ------------------------------------------------------------------------- miniature


def _mini_model(hidden):
    return dict(
        presets.TINY_MODEL, vocab_size=400, hidden_size=hidden, num_layers=2,
        head_dim=hidden // 4, mlp_dim=3 * hidden, max_position_embeddings=512,
    )  # fmt: skip


def _mini_train(kind, model, steps, lr, task="arithmetic", **options):
    stage = defaults(kind, **model)
    stage.optim.update(learning_rate=lr, warmup_steps=min(20, steps), weight_decay=0.01)
    stage.train.update(steps=steps, batch_size=32, seq_len=160, log_every=10)
    stage.train.checkpoint_every = max(steps // 2, 1)
    stage.data.update(task=task, vocab_size=400)
    stage.data.task_options = dict(TASK_OPTIONS, **options)
    return stage


def _mini_rl(model, steps, init_from, **options):
    stage = _mini_train("grpo", model, steps, 1e-4, **options)
    stage.init_from = init_from
    stage.optim.update(schedule="constant", total_steps=steps)
    stage.train.update(log_every=1)
    stage.grpo.update(
        num_prompts=8, num_samples=8, max_new_tokens=40, temperature=0.6, beta=0.0,
        dynamic_sampling=True, max_sampling_rounds=3, eps_high=0.28, aggregation="token_mean",
    )  # fmt: skip
    stage.rewards.format.weight = 0.1
    stage.rewards.language = dict(weight=0.1)
    return stage


def _mini_eval(kind, model_from, num_prompts, k, seed=12345):
    stage = defaults(kind)
    stage.model_from = model_from
    stage.eval.update(task="arithmetic", num_prompts=num_prompts, num_samples=k, ks=(1, k))
    stage.eval.update(max_new_tokens=40, prompts_per_batch=64, seed=seed)
    stage.eval.task_options = dict(TASK_OPTIONS)
    return stage


def _miniature(smoke: bool, chinese: bool):
    n = (lambda full, small: small) if smoke else (lambda full, small: full)
    teacher, small = _mini_model(96), _mini_model(64)
    config = ml_collections.ConfigDict()
    config.run_dir = "runs/r1_full" + ("_smoke" if smoke else "") + ("_zh" if chinese else "")
    config.prng_impl = "rbg"
    config.stages = MINI_STAGES
    config.tokenizer = defaults("tokenizer")
    config.tokenizer.tokenizer.update(task="arithmetic", num_examples=2000, vocab_size=400)
    config.tokenizer.tokenizer.task_options = dict(TASK_OPTIONS)
    # Stand-ins for the pretrained bases: a corpus of worked and hasty (unworked) solutions.
    config.base = _mini_train("sft", teacher, n(600, 6), 3e-3, hasty_rate=0.6)
    config.student_base = _mini_train("sft", small, n(300, 4), 3e-3, hasty_rate=0.6)
    config.cold_start = _mini_train("sft", teacher, n(30, 2), 1e-3)
    config.cold_start.init_from = "base"
    config.cold_start.data.seed = 3  # worked solutions only: the readable cold-start data
    config.reasoning_rl = _mini_rl(teacher, n(20, 2), "cold_start")
    config.rejection = _mini_eval("rejection_sample", "reasoning_rl", n(256, 4), n(4, 2), 777)
    config.sft_all = _mini_train("sft", teacher, n(60, 2), 1e-3)
    config.sft_all.update(init_from="base", data_from="rejection")
    # Started from the base (it can do the sums), it tells a wrong final answer from the
    # working's: 0.91 held-out pairwise accuracy at 400 steps; from scratch, 0.83.
    config.reward_model = _mini_train(
        "reward_model", teacher, n(400, 4), 3e-3, task="arithmetic_preferences"
    )
    config.reward_model.init_from = "base"
    config.reward_model.train.update(seq_len=192, eval_every=n(100, 4))
    config.reward_model.eval.num_prompts = n(256, 8)
    config.rl_all = _mini_rl(teacher, n(20, 2), "sft_all", reward_route="mixed")
    config.rl_all.reward_model_from = "reward_model"
    config.rl_all.reward_model.add_rules = ("format", "language")
    config.eval_r1 = _mini_eval("eval", "rl_all", n(64, 4), n(8, 2))
    config.distill_data = _mini_eval("rejection_sample", "rl_all", n(256, 4), n(4, 2), 778)
    config.student = _mini_train("sft", small, n(150, 2), 2e-3)
    config.student.update(init_from="student_base", data_from="distill_data")
    config.eval_student = _mini_eval("eval", "student", n(64, 4), n(8, 2))
    if smoke:  # a few steps produce no correct answers: keep traces to exercise the plumbing
        for name in ("rejection", "distill_data"):
            config[name].rejection.update(
                require_correct=False, require_well_formed=False, drop_truncated=False,
                max_repetition=1.0, min_language_consistency=0.0,
            )  # fmt: skip
        for name in ("base", "student_base", "cold_start", "sft_all", "student", "reward_model"):
            config[name].train.batch_size = 8
    if chinese:
        for name in config.stages.split(","):
            for section in ("data", "eval", "tokenizer"):
                if section in config[name] and "task_options" in config[name][section]:
                    options = config[name][section].task_options
                    config[name][section].task_options = dict(options, language="zh")
    return config
