"""R1 in miniature on 2 CPU cores, no downloads: the README's main job.

Run:
  r1jax demo                                   # full demo, writes runs/demo/report.md
  r1jax demo --config=configs/demo.py:smoke    # a faster smoke run (CI uses it)
  r1jax demo --config=configs/demo.py:zh       # the same in Chinese (also "smoke_zh")
  r1jax demo --run_dir=/tmp/demo --only=eval_grpo   # one stage alone (its inputs must exist)

Stages (re-running resumes; finished stages are skipped):
  tokenizer           sentencepiece on the task's text, R1 tags as single tokens
  pretrain            "base model": SFT on a corpus of mixed quality: worked solutions, and
                      HASTY_RATE of hasty guesses with no working (rarely right)
  eval_base           pass@1 over k samples (T=0.6, no top-p: see _eval_stage), pass@k, maj@k
  grpo                R1-Zero: GRPO from the base model with accuracy + format rewards
  eval_grpo
  rejection           k samples per prompt from the GRPO model, keep correct & well formed
  student_pretrain    a smaller student, pretrained like the base but with less compute
  eval_student_base
  distill             the student fine-tuned on the GRPO model's rejection-sampled traces
  eval_student
  teacher_topk        the GRPO model's top-TOP_K next tokens stored with those traces
  distill_topk        the student distilled on them (forward KL to the top-k + the traces' NLL),
                      distill's budget
  eval_student_topk
  student_grpo        the student trained by GRPO from its own base instead, GRPO's budget
  eval_student_grpo   (R1: distilling a strong reasoner beats RL on the small model)
  bilingual_pretrain  a base on the task in English and Chinese, SWITCH_RATE of its worked
                      solutions in the other language than the question's: it mixes languages
  grpo_mixed          GRPO from it with accuracy + format rewards
  grpo_consistent     the same plus R1's language-consistency reward (LANGUAGE_WEIGHT)
  eval_mixed, eval_consistent   pass@1 and the language-mixing rate of both
The task: single-digit arithmetic ("Compute 7 + 5", "Compute 3 - 8") with a chain of thought.
The base model imitates both styles; GRPO, rewarded against the true answer, has to discover
that working it out pays (R1-Zero's point: reinforcement against a verifier, not imitation, makes
the model reason; watch the response length grow). Evaluations, GRPO and rejection sampling use
the true answers.
"""

import ml_collections

from r1jax.config import defaults, presets

TASK = "arithmetic"
TASK_OPTIONS = dict(min_operands=2, max_operands=2, max_digits=1, ops="+-")
# The bilingual task: questions in English or Chinese, worked solutions with words in both.
BILINGUAL = dict(TASK_OPTIONS, language="mixed", worded=True)
SWITCH_RATE = 0.3
# The language reward's weight (accuracy: 1.0) and the bilingual GRPO runs' steps. At 40 steps
# weights 0.2, 0.3, 0.4 cut the mixing rate by 41%, 45%, 47% at no pass@1 cost, 0.5 and 1.0 by
# 57%, 70% at -5 points; at 80 steps 0.4 cut it by 92% at -1.9 points, 0.3 by 97% at +1.0
# (``r1jax demo``, 256 questions x 8 samples).
LANGUAGE_WEIGHT = 0.3
BILINGUAL_RL_STEPS = 80
VOCAB = 512  # English and Chinese text (the tokenizer is trained on the bilingual task)
SEQ_LEN = 160  # the R1-Zero template is ~128 tokens, a worked solution ~16
MAX_NEW = 40
TOP_K = 16  # teacher entries stored per position for top-k distillation
EVAL_TOP_P = 1.0  # see _eval_stage
# Held-out questions per evaluation (x 8 samples): a pass@1's standard error over questions is
# 0.8 points (1.5 at 256), small beside the margins the claims are checked against (top-k vs
# SFT: +1.3 to +5.1 points, see teacher_topk below). Each evaluation takes a few seconds.
EVAL_PROMPTS = 1024
HASTY_RATE = 0.6  # share of hasty, unworked answers in the pretraining corpus (0.5 gave
# +15..+19 points after GRPO depending on float rounding; 0.6 leaves the base more to gain)


def _model(hidden, layers):
    return dict(
        presets.TINY_MODEL,
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_layers=layers,
        head_dim=hidden // 4,
        mlp_dim=3 * hidden,
        max_position_embeddings=512,
    )


def _data(stage, seed, hasty_rate=0.0, task_options=TASK_OPTIONS):
    options = dict(task_options, hasty_rate=hasty_rate) if hasty_rate else dict(task_options)
    stage.data.update(task=TASK, seed=seed, vocab_size=VOCAB)
    stage.data.task_options = options


def _sft_stage(model, steps, batch_size, lr, seed, hasty_rate=0.0, **links):
    stage = defaults("sft", **model)
    stage.seed = seed
    stage.optim.update(learning_rate=lr, warmup_steps=20, weight_decay=0.01)
    stage.train.update(
        steps=steps, batch_size=batch_size, seq_len=SEQ_LEN, log_every=10, checkpoint_every=steps
    )
    _data(stage, seed, hasty_rate)
    stage.update(links)
    return stage


def _eval_stage(model_from, num_prompts, k, kind="eval", task_options=TASK_OPTIONS):
    stage = defaults(kind)
    stage.model_from = model_from
    if kind == "eval":
        # R1's temperature (0.6) without its top-p 0.95. On this 512-token model the nucleus
        # cuts the only alternatives a trained model keeps, so its errors become the same
        # answer eight times and majority voting has nothing to fix: after GRPO, five runs
        # (data orders) gave maj@8 - pass@1 of +4.2, +4.9, +4.6, +4.6, +5.3 points with top-p
        # 0.95 and +8.6, +10.2, +8.6, +9.0, +9.5 without (maj@8 0.90 either way for the first;
        # pass@1 0.856 and 0.814). Rejection sampling keeps R1's top-p.
        stage.eval.top_p = EVAL_TOP_P
    stage.eval.update(
        task=TASK,
        num_prompts=num_prompts,
        num_samples=k,
        ks=(1, k),
        max_new_tokens=MAX_NEW,
        prompts_per_batch=64,
    )
    stage.eval.task_options = dict(task_options)
    return stage


def _grpo_stage(
    model, steps, lr, num_prompts, group, init_from="pretrain", task_options=TASK_OPTIONS
):
    stage = defaults("grpo", **model)
    stage.init_from = init_from
    stage.seed = 1
    stage.optim.update(learning_rate=lr, total_steps=steps, schedule="constant")
    stage.train.update(steps=steps, log_every=1, checkpoint_every=max(steps // 2, 1))
    _data(stage, seed=1, task_options=task_options)
    stage.grpo.update(
        num_prompts=num_prompts,
        num_samples=group,
        max_new_tokens=MAX_NEW,
        temperature=0.6,  # = the evaluation temperature (R1 samples rollouts at 1.0)
        dynamic_sampling=True,  # DAPO: drop all-equal groups, refill from more prompts
        max_sampling_rounds=3,
        beta=0.0,
        eps_high=0.28,
        aggregation="token_mean",
    )
    stage.rewards.format.weight = 0.1
    return stage


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke", "zh", "smoke_zh"):
        raise ValueError(f"configs/demo.py:{variant}: one of smoke, zh, smoke_zh (or none)")
    smoke, chinese = "smoke" in variant, "zh" in variant
    scale = lambda full, small: small if smoke else full
    config = ml_collections.ConfigDict()
    config.run_dir = "runs/demo" + ("-smoke" if smoke else "") + ("-zh" if chinese else "")
    config.prng_impl = "rbg"  # fast to compile on CPU; "threefry2x32" is JAX's default
    config.stages = ",".join(
        [
            "tokenizer",
            "pretrain",
            "eval_base",
            "grpo",
            "eval_grpo",
            "rejection",
            "student_pretrain",
            "eval_student_base",
            "distill",
            "eval_student",
            "teacher_topk",
            "distill_topk",
            "eval_student_topk",
            "student_grpo",
            "eval_student_grpo",
            "bilingual_pretrain",
            "grpo_mixed",
            "eval_mixed",
            "grpo_consistent",
            "eval_consistent",
        ]
    )
    config.tokenizer = defaults("tokenizer")
    config.tokenizer.tokenizer.update(task=TASK, num_examples=2000, vocab_size=VOCAB)
    config.tokenizer.tokenizer.task_options = dict(BILINGUAL)
    teacher, student = _model(96, 2), _model(64, 2)
    config.pretrain = _sft_stage(teacher, scale(600, 8), 32, 3e-3, seed=0, hasty_rate=HASTY_RATE)
    k = scale(8, 2)
    config.eval_base = _eval_stage("pretrain", scale(EVAL_PROMPTS, 4), k)
    # GRPO: lr 1e-4 and rollouts at the evaluation temperature (0.6). In our runs from one base
    # (HASTY_RATE 0.5, pass@1 0.37): T 0.6 / lr 1e-4 -> 0.56; T 1.0 / lr 1e-4 -> 0.45;
    # T 1.0 / lr 5e-5 -> 0.48; T 1.0 / lr 3e-4 -> 0.19 (it learnt to work every answer out but
    # lost accuracy).
    config.grpo = _grpo_stage(teacher, scale(40, 2), 1e-4, scale(8, 2), scale(8, 4))
    config.eval_grpo = _eval_stage("grpo", scale(EVAL_PROMPTS, 4), k)
    config.rejection = _eval_stage("grpo", scale(256, 4), scale(4, 2), kind="rejection_sample")
    config.rejection.eval.seed = 777  # prompts of the training distribution, not the eval seed
    config.rejection.rejection.max_per_prompt = 2
    if smoke:  # a few SFT steps produce no correct answers: exercise the plumbing anyway
        config.rejection.rejection.update(
            require_correct=False,
            require_well_formed=False,
            drop_truncated=False,
            max_repetition=1.0,
            min_language_consistency=0.0,
        )
    config.student_pretrain = _sft_stage(
        student, scale(300, 4), 32, 3e-3, seed=0, hasty_rate=HASTY_RATE
    )
    config.eval_student_base = _eval_stage("student_pretrain", scale(EVAL_PROMPTS, 4), k)
    config.distill = _sft_stage(
        student,
        scale(150, 4),
        32,
        2e-3,
        seed=2,
        init_from="student_pretrain",
        data_from="rejection",
    )
    config.eval_student = _eval_stage("distill", scale(EVAL_PROMPTS, 4), k)
    config.teacher_topk = defaults("teacher_topk")
    config.teacher_topk.update(model_from="grpo", data_from="rejection")
    config.teacher_topk.train.update(batch_size=32, seq_len=SEQ_LEN)
    # The teacher's own distribution (temperature 1.0), which the student matches at 1.0 and
    # then samples at 0.6 as the teacher does. Against SFT on the same traces, 150 steps, four
    # data orders (``r1jax demo``, 256 questions x 8 samples): +2.3, +5.1, +1.7, +2.0 points of
    # pass@1; the teacher at 0.6 (sharper targets, matched at 1.0): +0.8, +2.7, +1.2, -0.7.
    config.teacher_topk.distill.update(top_k=TOP_K, temperature=1.0)
    config.distill_topk = _sft_stage(
        student, scale(150, 4), 32, 2e-3, seed=2, init_from="student_pretrain",
        data_from="teacher_topk",
    )  # fmt: skip
    config.distill_topk.kind = "distill"
    config.distill_topk.distill = defaults("distill").distill
    # Soft targets (the teacher's top-k) plus the traces' own tokens (hard targets, weight 1, as
    # Hinton et al.): the traces are filtered for correctness, the teacher's distribution is not.
    config.distill_topk.distill.update(teacher="topk", top_k=TOP_K, hard_weight=1.0)
    config.eval_student_topk = _eval_stage("distill_topk", scale(EVAL_PROMPTS, 4), k)
    config.student_grpo = _grpo_stage(
        student, scale(40, 2), 1e-4, scale(8, 2), scale(8, 4), init_from="student_pretrain"
    )
    config.eval_student_grpo = _eval_stage("student_grpo", scale(EVAL_PROMPTS, 4), k)
    config.bilingual_pretrain = _sft_stage(
        teacher, scale(600, 8), 32, 3e-3, seed=0, hasty_rate=HASTY_RATE
    )
    _data(config.bilingual_pretrain, 0, HASTY_RATE, dict(BILINGUAL, switch_rate=SWITCH_RATE))
    for name, weight in (("mixed", 0.0), ("consistent", LANGUAGE_WEIGHT)):
        stage = _grpo_stage(
            teacher,
            scale(BILINGUAL_RL_STEPS, 2),
            1e-4,
            scale(8, 2),
            scale(8, 4),
            "bilingual_pretrain",
            BILINGUAL,
        )
        if weight:
            stage.rewards.language = dict(weight=weight)
        config[f"grpo_{name}"] = stage
        config[f"eval_{name}"] = _eval_stage(
            f"grpo_{name}", scale(EVAL_PROMPTS, 4), k, task_options=BILINGUAL
        )
    if smoke:  # smaller batches and shorter completions: a plumbing check in about a minute
        for name in ("pretrain", "student_pretrain", "distill", "distill_topk", "teacher_topk"):
            config[name].train.batch_size = 8
        config.bilingual_pretrain.train.batch_size = 8
        for name in config.stages.split(","):
            if name.startswith("eval_") or name == "rejection":
                config[name].eval.max_new_tokens = 24
        config.grpo.grpo.max_new_tokens = 24
        for name in ("student_grpo", "grpo_mixed", "grpo_consistent"):
            config[name].grpo.max_new_tokens = 24
    if chinese:
        _in_chinese(config)
    return config


def _in_chinese(config) -> None:
    """Every stage's task in Chinese: the questions, the worked solutions and the R1-Zero
    template ("zh"; each example's ``language`` field, which the language reward and rejection
    sampling read too)."""
    for name in config.stages.split(","):
        stage = config[name]
        for section in ("data", "eval", "tokenizer"):
            if section in stage and "task_options" in stage[section]:
                stage[section].task_options = dict(stage[section].task_options, language="zh")
