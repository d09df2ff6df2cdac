"""Cells of ``04_inside_the_reasoner.ipynb`` (written by ``build.py``): seed question 20, how
to see inside a reasoning model, on the demo's model or a small one trained in the notebook."""

INSIDE = [
    (
        "md",
        """\
# Inside a small reasoner: attention, logit lens, perturbations

How can we tell whether a reasoning model *uses* its chain of thought (the seed notes'
question 20)? Three looks inside, with `r1jax.model.inspect` (every layer's residual stream and
every head's attention probabilities, computed layer by layer):

1. **attention when the answer is written**: how much of each head's attention, at the
   positions that write the answer, goes to the prompt, the chain of thought and the answer;
2. **logit lens**: each layer's residual stream read out by the final norm and the LM head,
   at the answer position: from which layer on is the answer the top token?
3. **perturbation**: change one number in the question and watch the chain of thought and
   the answer follow (or not).

The model is the demo's GRPO model when `runs/demo` exists (run `r1jax demo` first, from the
directory this notebook runs in: its GRPO model solves ~60% of the questions). Without it, a
small model is trained here for a minute on worked arithmetic: it learns the format, not yet
the arithmetic, so the three looks show the mechanics more than a reasoner.""",
    ),
    ("code", "INSTALL"),
    ("code", "CPU_SETUP"),
    ("md", "## The model"),
    (
        "code",
        """\
import tempfile
from pathlib import Path

from r1jax.checkpoint import load_params
from r1jax.config import presets, typed
from r1jax.data import load_tokenizer

DEMO = Path("runs/demo")
TASK = dict(min_operands=2, max_operands=2, max_digits=1, ops="+-")
if (DEMO / "grpo" / "checkpoints").exists():
    model_dir, tokenizer_path = DEMO / "grpo", DEMO / "tokenizer" / "tokenizer.model"
else:  # SFT on worked solutions: enough for a model that writes a chain of thought
    from r1jax.train import loop

    stage = presets.tiny("sft", vocab_size=400)
    stage.data.update(vocab_size=400)
    stage.data.task_options = TASK
    stage.train.update(steps=300, batch_size=16, seq_len=160, log_every=50, checkpoint_every=300)
    stage.optim.update(learning_rate=3e-3, warmup_steps=10)
    model_dir = Path(tempfile.mkdtemp()) / "sft"
    loop.run(typed(stage), model_dir)
    tokenizer_path = model_dir / "tokenizer.model"
config, params = load_params(model_dir)
tokenizer = load_tokenizer(str(tokenizer_path))
print(f"{config.num_layers} layers, {config.num_heads} heads, {config.num_params:,} parameters")""",
    ),
    ("md", "## A question and the model's answer (greedy)"),
    (
        "code",
        """\
import numpy as np

from r1jax.data.templates import encode_prompt, format_r1_zero
from r1jax.sampling import generate


def answer(question):
    \"\"\"(prompt ids, completion ids, completion text) of the greedy completion.\"\"\"
    prompt = encode_prompt(tokenizer, format_r1_zero(question))
    out = generate(params, config, [prompt], rng=jax.random.key(0), max_new_tokens=40,
                   greedy=True, stop_token_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
    ids = [int(t) for t in out.completions()[0] if t != tokenizer.eos_id]
    return prompt, ids, tokenizer.decode(ids)


prompt, completion, text = answer("Compute 7 + 5")
print(text)""",
    ),
    (
        "md",
        """\
## 1. Where the model looks when it writes the answer

The sequence is prompt + completion. Its regions: the prompt, the chain of thought (the
completion up to `<answer>`, tags included) and the answer (inside `<answer>...</answer>`). For
the queries that write the answer's tokens, each head's attention mass per region, averaged
over them.""",
    ),
    (
        "code",
        """\
import jax.numpy as jnp
import matplotlib.pyplot as plt

from r1jax.model import inspect

tokens = prompt + completion
pieces = [tokenizer.decode([t]) for t in tokens]
starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])  # each token's offset in the text
full = "".join(pieces)
opened = full.find("<answer>", starts[len(prompt)])
inside = opened + len("<answer>") if opened >= 0 else len(full)
closed = full.find("</answer>", inside) if opened >= 0 else len(full)
closed = len(full) if closed < 0 else closed
# 0 prompt, 1 chain of thought (and tags), 2 the answer's own tokens
regions = np.where(np.arange(len(tokens)) < len(prompt), 0,
                   np.where((starts >= inside) & (starts < closed), 2, 1))
traced = inspect.trace(params, jnp.asarray([tokens]), config)
writers = np.flatnonzero(regions == 2) - 1  # the positions whose next token is in the answer
writers = writers[writers >= 0] if len(writers) else np.array([len(tokens) - 1])
attn = np.asarray(traced.attention)[:, 0][:, :, writers]  # [L, N, answer tokens, S]
mass = np.stack([attn[..., regions == r].sum(-1).mean(-1) for r in range(3)], -1)  # [L, N, 3]
fig, axes = plt.subplots(1, config.num_layers, figsize=(4 * config.num_layers, 2.8))
for layer, ax in enumerate(np.atleast_1d(axes)):
    bottom = np.zeros(config.num_heads)
    for r, name in enumerate(["prompt", "chain of thought", "answer"]):
        ax.bar(range(config.num_heads), mass[layer, :, r], bottom=bottom, label=name)
        bottom += mass[layer, :, r]
    ax.set_title(f"layer {layer}")
    ax.set_xlabel("head")
axes = np.atleast_1d(axes)
axes[0].set_ylabel("attention mass")
axes[-1].legend(fontsize=7)
plt.tight_layout()
print("mean mass on the chain of thought per layer:", np.round(mass[..., 1].mean(-1), 3))""",
    ),
    (
        "md",
        """\
## 2. Logit lens: from which layer is the answer decided?

Each layer's residual stream at the first answer-writing position, read out as if it were the
last layer: the rank of the token the model actually wrote, and the top token.""",
    ),
    (
        "code",
        """\
lens = np.asarray(inspect.logit_lens(params, traced, config))[:, 0]  # [L + 1, T, V]
position = int(writers[0])
written = tokens[position + 1]
for layer in range(config.num_layers + 1):
    logits = lens[layer, position]
    rank = int((logits > logits[written]).sum())
    top = tokenizer.decode([int(logits.argmax())])
    name = "embeddings" if layer == 0 else f"after layer {layer}"
    print(f"{name:>16}: written token {tokenizer.decode([written])!r} rank {rank:3d}, "
          f"top {top!r}")""",
    ),
    (
        "md",
        """\
## 3. Perturb a number in the question

If the model reasons from the question, changing an operand changes the chain of thought
and, through it, the answer. A model that pattern-matches would keep its old answer.""",
    ),
    (
        "code",
        """\
for question in ("Compute 7 + 5", "Compute 7 + 1", "Compute 3 + 5", "Compute 7 - 5"):
    _, _, text = answer(question)
    print(f"{question:>16} -> {text}")""",
    ),
]
