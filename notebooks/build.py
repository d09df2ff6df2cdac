"""Writes the notebooks in this folder from the cell sources below (outputs stripped).

  python notebooks/build.py          # rewrite the .ipynb files
  python notebooks/build.py --check  # exit 1 if a committed notebook differs from this source

Edit the cells here, not in the .ipynb files, so the diff stays readable and outputs never land
in git. Each notebook runs top to bottom on a CPU in under a minute (tests/test_notebooks.py);
on Colab, its first cell installs r1jax.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
REPO_URL = "https://github.com/r1jax/r1jax"  # where Colab installs r1jax from

INSTALL = f"""\
# On Colab: install r1jax (a local checkout needs nothing: `pip install -e .` already did it).
import sys

if "google.colab" in sys.modules:
    !pip install -q "r1jax @ git+{REPO_URL}"
"""

CPU_SETUP = """\
import jax

# The "rbg" PRNG compiles ~10x faster than threefry on XLA:CPU; any implementation works.
jax.config.update("jax_default_prng_impl", "rbg")
print(jax.devices())
"""

QUICKSTART = [
    (
        "md",
        """\
# r1jax quickstart: sample, score, GRPO

A tiny Qwen2-shaped model, an arithmetic task and the R1-Zero recipe end to end:

1. train a small tokenizer on the task text and build a random tiny model,
2. **sample** groups of completions with the jitted sampler,
3. **score** them with the reward functions,
4. turn rewards into **group-relative advantages** and take **GRPO steps**,
5. plot the reward.

It runs in under a minute on a CPU. The model is random, so the accuracy reward stays at zero;
a toy reward (how many digits a completion has) shows GRPO moving the policy.""",
    ),
    ("code", INSTALL),
    ("code", CPU_SETUP),
    ("md", "## A tokenizer and a tiny model"),
    (
        "code",
        """\
import tempfile

import numpy as np

from r1jax.data import get_task, load_tokenizer, train_sentencepiece
from r1jax.data.templates import encode_prompt, format_r1_zero
from r1jax.model import ModelConfig, init_params
from r1jax.sharding import make_mesh

task = get_task("arithmetic")
examples = [task.example(i, seed=0) for i in range(300)]
corpus = [  # the tokenizer also learns the R1-Zero prompt template
    t for ex in examples for t in (format_r1_zero(ex["prompt"]), ex["gold_cot"], str(ex["answer"]))
]
workdir = tempfile.mkdtemp()
tokenizer = load_tokenizer(train_sentencepiece(corpus, f"{workdir}/tok", 512))

config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=16, mlp_dim=128)
mesh = make_mesh({"data": -1})  # all devices (one on a CPU); params are placed on it
params = init_params(config, jax.random.key(0), mesh=mesh)
print(examples[0]["prompt"], "->", examples[0]["answer"])
print(f"{config.num_params:,} parameters; vocab {tokenizer.vocab_size}")""",
    ),
    ("md", "## Sample a group of completions per prompt"),
    (
        "code",
        """\
from r1jax.sampling import generate

NUM_PROMPTS, GROUP, MAX_NEW = 4, 4, 16
batch = examples[:NUM_PROMPTS]
prompt_texts = [format_r1_zero(ex["prompt"]) for ex in batch]
prompts = [encode_prompt(tokenizer, t) for t in prompt_texts]

def sample(params, seed):
    return generate(params, config, prompts, rng=jax.random.key(seed), num_samples=GROUP,
                    max_new_tokens=MAX_NEW, stop_token_ids=(tokenizer.eos_id,),
                    pad_id=tokenizer.pad_id)

out = sample(params, seed=1)
completions = [tokenizer.decode(c) for c in out.completions()]
print(out.tokens.shape, "rows are prompt-major: rows 0..3 answer prompt 0")
print(repr(completions[0]))""",
    ),
    (
        "md",
        """\
## Score with the rewards

Every reward is `fn(prompts, completions, **fields) -> list[float]`. `CompositeReward` runs a
weighted set of them in a process pool with a per-item time limit.""",
    ),
    (
        "code",
        """\
from r1jax.rewards import CompositeReward

reward = CompositeReward.from_config(
    {"accuracy": {"weight": 1.0}, "format": {"weight": 0.5}}, num_workers=1
)

def digit_reward(completions):
    \"\"\"Toy shaping reward: the fraction of characters that are digits.\"\"\"
    return np.array([sum(c.isdigit() for c in s) / max(len(s), 1) for s in completions])

def score(out):
    texts = [tokenizer.decode(c) for c in out.completions()]
    answers = [str(ex["answer"]) for ex in batch for _ in range(GROUP)]
    result = reward.evaluate([t for t in prompt_texts for _ in range(GROUP)], texts,
                             answer=answers)
    return np.asarray(result.total, np.float32) + digit_reward(texts).astype(np.float32), result

rewards, result = score(out)
print("components:", {k: np.round(v, 2).tolist() for k, v in result.components.items()})
print("total:", np.round(rewards, 3))""",
    ),
    (
        "md",
        """\
## Group-relative advantages and GRPO steps

Advantages are rewards standardised within each prompt's group (computed on the whole batch).
The update is one jitted, sharded train step over the clipped-surrogate GRPO objective; the
sampler's log-probs serve as pi_old (one update per rollout).""",
    ),
    (
        "code",
        """\
from r1jax.config import GRPOConfig, OptimConfig
from r1jax.losses import group_advantages
from r1jax.train import objectives
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state
from r1jax.train.step import make_train_step

print("advantages:", np.round(np.asarray(group_advantages(rewards, GROUP)), 2))

optimizer = make_optimizer(OptimConfig(learning_rate=3e-3, schedule="constant"))
state = create_train_state(config, optimizer, jax.random.key(1), mesh, params=params)
grpo = objectives.grpo(config, GRPOConfig(beta=0.0))
train_step = make_train_step(config, grpo, optimizer, mesh)

history = []
for step in range(8):
    out = sample(state.params, seed=100 + step)           # 1. rollout (jitted)
    rewards, _ = score(out)                               # 2. scoring (host Python)
    grpo_batch = dict(                                    # 3. update (jitted)
        prompt_tokens=out.prompt_tokens, prompt_mask=out.prompt_mask,
        completion_tokens=out.tokens, completion_mask=out.mask,
        old_logprobs=out.logprobs, advantages=np.asarray(group_advantages(rewards, GROUP)),
    )
    state, metrics = train_step(state, grpo_batch)
    history.append(float(rewards.mean()))
    print(f"step {step}: reward {rewards.mean():.3f}  loss {float(metrics['loss']):+.4f}")
reward.close()""",
    ),
    ("md", "## Plot"),
    (
        "code",
        """\
import matplotlib.pyplot as plt

plt.figure(figsize=(5, 3))
plt.plot(history, marker="o")
plt.xlabel("GRPO step")
plt.ylabel("mean reward")
plt.title("tiny model, toy reward")
plt.tight_layout()
plt.show()""",
    ),
    (
        "md",
        """\
Next: `r1jax train --config=configs/grpo_tiny.py` runs the same stages as a resumable job
(checkpoints, metrics, dynamic sampling), and `launch/` runs it on TPU pods and GPU clusters.""",
    ),
]

HF_CHECKPOINT = [
    (
        "md",
        """\
# Load a Hugging Face checkpoint and sample

`r1jax.model.hf.load(path)` reads a Qwen2 / Llama `config.json` + safetensors directory into
`(ModelConfig, params)`. On Colab this notebook downloads **Qwen2.5-0.5B-Instruct**; elsewhere
(CI) it builds a tiny random Qwen2 with `transformers` as a stand-in and checks that r1jax's
logits match the PyTorch model's.""",
    ),
    ("code", INSTALL),
    ("code", CPU_SETUP),
    (
        "code",
        """\
import sys
import tempfile

import numpy as np

REAL = "google.colab" in sys.modules  # set True to download the real model anywhere
if REAL:
    from huggingface_hub import snapshot_download

    path = snapshot_download("Qwen/Qwen2.5-0.5B-Instruct")
else:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf_config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=256, tie_word_embeddings=True,
                            initializer_range=0.3)  # large enough for varied tokens
    torch_model = Qwen2ForCausalLM(hf_config).eval()
    path = tempfile.mkdtemp()
    torch_model.save_pretrained(path, safe_serialization=True)
print(path)""",
    ),
    (
        "code",
        """\
from r1jax.model import forward, hf

config, params = hf.load(path)
print(config)""",
    ),
    ("md", "## Prompt ids"),
    (
        "code",
        """\
if REAL:
    from r1jax.data import HFTokenizer

    tokenizer = HFTokenizer(f"{path}/tokenizer.json")
    text = ("<|im_start|>user\\nWhat is 12 * 7? Think step by step.<|im_end|>\\n"
            "<|im_start|>assistant\\n")
    prompt = tokenizer.encode(text)
    stop_ids = (tokenizer.eos_id,)
else:
    tokenizer = None
    prompt = [5, 17, 42, 99, 3, 64, 7]
    stop_ids = ()
print(len(prompt), "prompt tokens")""",
    ),
    ("md", "## The stand-in's logits match transformers"),
    (
        "code",
        """\
if not REAL:
    tokens = np.array([prompt], np.int32)
    logits, _ = forward(params, tokens, config)
    with torch.no_grad():
        reference = torch_model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    err = float(np.max(np.abs(np.asarray(logits) - reference)))
    print(f"max |r1jax - transformers| = {err:.2e}")
    assert err < 1e-3""",
    ),
    ("md", "## Sample"),
    (
        "code",
        """\
from r1jax.sampling import generate

out = generate(params, config, [prompt], rng=jax.random.key(0), num_samples=2,
               max_new_tokens=64 if REAL else 12, temperature=0.7, stop_token_ids=stop_ids)
for ids in out.completions():
    print(tokenizer.decode(ids) if tokenizer else ids)
greedy = generate(params, config, [prompt], rng=jax.random.key(0), greedy=True,
                  max_new_tokens=12, stop_token_ids=stop_ids)
print("greedy:", greedy.completions()[0])""",
    ),
    (
        "code",
        """\
if not REAL:  # greedy decoding agrees with transformers' generate
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
    print("transformers:", ref[0, len(prompt):].tolist())
    assert ref[0, len(prompt):].tolist() == list(greedy.completions()[0])""",
    ),
]

LOSSES = [
    (
        "md",
        """\
# The losses, with small arrays

Every loss in `r1jax.losses` returns `(loss, metrics)` to **minimise**. Shapes: B rows,
T completion positions, V vocabulary; masks mark real tokens.""",
    ),
    ("code", INSTALL),
    (
        "code",
        """\
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import losses

np.set_printoptions(precision=3, suppress=True)""",
    ),
    (
        "md",
        """\
## Token log-probabilities

`token_logprobs(logits_BTV, targets_BT)` = log softmax(logits)[target]; a sampling temperature
divides the logits first.""",
    ),
    (
        "code",
        """\
logits = jnp.array([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]]])  # B=1, T=2, V=4
targets = jnp.array([[0, 1]])
print(losses.token_logprobs(logits, targets))
print(losses.token_logprobs(logits, targets, temperature=2.0))""",
    ),
    (
        "md",
        """\
## Group-relative advantages

Rows `i*G .. i*G+G-1` are the G completions of prompt i. The advantage is the reward minus
its group's mean, divided by the group's std (`scale="group"`, as in DeepSeekMath/R1),
by the batch std (`"batch"`) or not at all (`"none"`, Dr. GRPO). A group where every
completion got the same reward has zero advantage: it teaches nothing.""",
    ),
    (
        "code",
        """\
rewards = jnp.array([1.0, 0.0, 0.0, 1.0,   1.0, 1.0, 1.0, 1.0])  # 2 prompts x G=4
for scale in ("group", "batch", "none"):
    print(f"{scale:5s}", losses.group_advantages(rewards, 4, scale=scale))
print("leave-one-out", losses.group_advantages(rewards, 4, baseline="leave_one_out"))
print("degenerate groups:", losses.group_is_degenerate(rewards, 4))""",
    ),
    (
        "md",
        """\
## The clipped surrogate

Per token, with ratio r = exp(logp - old_logp) and advantage A:
`loss = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)`.
Its gradient vanishes once the ratio has moved past the clip range *in the direction the
advantage pushes*: a positive-advantage token stops being pushed up beyond 1 + eps, a negative
one stops being pushed down below 1 - eps.""",
    ),
    (
        "code",
        """\
old = jnp.zeros((1, 1))
mask = jnp.ones((1, 1))

def token_loss(logp, adv):
    loss, _ = losses.grpo_loss(logp, old, jnp.array([adv]), mask, eps_low=0.2)
    return loss

grad = jax.jit(jax.grad(token_loss))
print(" ratio   adv   loss    d loss / d logp")
for ratio in (0.7, 1.0, 1.3):
    for adv in (1.0, -1.0):
        logp = jnp.log(jnp.array([[ratio]]))
        print(f"{ratio:5.1f} {adv:+5.1f} {float(token_loss(logp, adv)):+6.3f}   "
              f"{float(grad(logp, adv)[0, 0]):+.3f}")""",
    ),
    (
        "md",
        """\
## Aggregation: how tokens are averaged

Two completions, of 1 and 3 tokens, all with advantage 1 and ratio 1 (so the surrogate is
-1 per token). `seq_mean` averages each sequence then the batch (GRPO); `token_mean` averages
all tokens of the batch (DAPO); `constant` divides by a fixed `max_tokens` (Dr. GRPO, here
4 per row). Look at the per-token gradient weights: `seq_mean` gives the lone token of the
short completion 3x the weight of each token of the long one; the others weigh tokens equally.""",
    ),
    (
        "code",
        """\
mask = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
old = jnp.zeros((2, 3))
adv = jnp.ones(2)
for aggregation in ("seq_mean", "token_mean", "constant"):
    f = lambda lp, agg=aggregation: losses.grpo_loss(lp, old, adv, mask, aggregation=agg,
                                                     max_tokens=4)[0]
    print(f"{aggregation:10s} loss {float(f(old)):+.3f}  per-token weight\\n",
          -np.asarray(jax.grad(f)(old)))""",
    ),
    (
        "md",
        """\
## The KL penalty to the reference policy

With `beta > 0` the loss adds `beta * KL(pi || pi_ref)` using the k3 estimator
`exp(ref - logp) - (ref - logp) - 1`, which is >= 0 and 0 when the policies agree.""",
    ),
    (
        "code",
        """\
logp = jnp.log(jnp.array([[0.5, 0.2]]))
mask2 = jnp.ones((1, 2))
for ref in ([0.5, 0.2], [0.4, 0.4]):
    loss, metrics = losses.grpo_loss(logp, logp, jnp.zeros(1), mask2,
                                     ref_logp_BT=jnp.log(jnp.array([ref])), beta=0.1)
    print(ref, "loss", float(loss), {k: float(v) for k, v in metrics.items() if "kl" in k})""",
    ),
    (
        "md",
        """\
## SFT: masked next-token cross-entropy

Only positions where the mask is 1 count (the completion, not the prompt).""",
    ),
    (
        "code",
        """\
logits = jnp.zeros((1, 3, 4)).at[0, :, 2].set(2.0)  # always predicts token 2
targets = jnp.array([[2, 2, 0]])
for m in ([1, 1, 0], [0, 0, 1]):
    loss, _ = losses.sft_loss(logits, targets, jnp.array([m], jnp.float32))
    print(m, float(loss))""",
    ),
    (
        "md",
        """\
## Distillation: forward KL, reverse KL, JSD

`distill_loss(student_logits, teacher, mask, kind=...)`. Forward KL(teacher || student) is
mode-covering, reverse KL(student || teacher) mode-seeking; the teacher can also be given as
top-k `(indices, logprobs)` (`teacher_topk`).""",
    ),
    (
        "code",
        """\
teacher = jnp.array([[[3.0, 3.0, -3.0, -3.0]]])   # two modes
student = jnp.array([[[4.0, -2.0, -3.0, -3.0]]])  # covers one of them
mask1 = jnp.ones((1, 1))
for kind in ("forward_kl", "reverse_kl", "jsd"):
    loss, _ = losses.distill_loss(student, teacher, mask1, kind=kind)
    print(f"{kind:10s} {float(loss):.3f}")
top = losses.teacher_topk(teacher, 2)
print("top-2 teacher:", top[0], np.exp(np.asarray(top[1])))
print("forward_kl vs top-2:", float(losses.distill_loss(student, top, mask1)[0]))""",
    ),
    (
        "md",
        """\
## Exact gradient accumulation

`batch_normalizer` computes the denominator over the whole batch once; passing it to every
micro-batch makes the summed micro-batch losses equal the full-batch loss.""",
    ),
    (
        "code",
        """\
rng = np.random.default_rng(0)
logp = jnp.asarray(rng.normal(size=(4, 5)) * 0.1)
old = jnp.zeros((4, 5))
adv = jnp.asarray(rng.normal(size=4))
mask = jnp.asarray((rng.random((4, 5)) < 0.7).astype(np.float32))
full, _ = losses.grpo_loss(logp, old, adv, mask, aggregation="token_mean")
norm = losses.batch_normalizer(mask, "token_mean")
parts = [losses.grpo_loss(logp[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2],
                          aggregation="token_mean", normalizer=norm)[0] for i in (0, 2)]
print(float(full), float(sum(parts)))""",
    ),
]

sys.path.insert(0, str(HERE))
from cells_inside import INSIDE  # noqa: E402  (the fourth notebook's cells, in their own file)
from cells_lora import LORA  # noqa: E402  (the fifth notebook's cells)

_SHARED = {"INSTALL": INSTALL, "CPU_SETUP": CPU_SETUP}
INSIDE = [(kind, _SHARED.get(src, src)) for kind, src in INSIDE]
LORA = [(kind, _SHARED.get(src, src)) for kind, src in LORA]
NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_hf_checkpoint.ipynb": HF_CHECKPOINT,
    "03_losses_explained.ipynb": LOSSES,
    "04_inside_the_reasoner.ipynb": INSIDE,
    "05_lora_grpo.ipynb": LORA,
}


def make(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for kind, source in cells:
        new = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(new(source))
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
        cell.id = f"cell-{i}"
    return nb


def write(directory: pathlib.Path) -> list[pathlib.Path]:
    """Writes every notebook into ``directory``, formatted by ruff (as CI checks them)."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        path = directory / name
        nbformat.write(make(cells), path)
        paths.append(path)
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).with_name("ruff"))
    subprocess.run([ruff, "format", "--quiet", *map(str, paths)], check=True)  # noqa: S603
    return paths


def main(argv) -> int:
    if "--check" not in argv:
        write(HERE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            p.name
            for p in write(pathlib.Path(tmp))
            if not (HERE / p.name).exists() or (HERE / p.name).read_text() != p.read_text()
        ]
    if stale:
        print(f"stale notebooks (run python notebooks/build.py): {stale}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
