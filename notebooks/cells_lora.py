"""Cells of ``05_lora_grpo.ipynb`` (written by ``build.py``): GRPO with LoRA / QLoRA on one
accelerator (a Colab GPU or TPU), from a Hugging Face checkpoint the user points at; with no
checkpoint, the same recipe on the tiny model and the built-in arithmetic task (CI runs that)."""

LORA = [
    (
        "md",
        """\
# GRPO with LoRA on one accelerator

R1-style reinforcement learning on a single GPU or TPU chip (a Colab runtime, one v5e chip, a
16-24 GB GPU): only **low-rank adapters** are trained, the base model stays frozen (in bf16,
or quantized to 4-bit NF4 for QLoRA), and GRPO's KL reference is that same base with the
adapters off, so there is no second copy of the weights.

1. point `MODEL_DIR` at a Hugging Face checkpoint (e.g. Qwen2.5-1.5B-Instruct, downloaded
   yourself) and `DATA` at GSM8K-style JSONL (`question` / `answer` records);
2. `r1jax plan` compiles the run's programs for this device and says whether they fit;
3. train: the sampler decodes on the (quantized) base with the adapters attached, rewards
   score accuracy and format, GRPO updates the adapters;
4. export the adapters in the PEFT format, or merged into a full Hugging Face checkpoint.

Left empty, `MODEL_DIR` gives the tiny model on the built-in arithmetic task: the notebook then
runs end to end on a CPU in about a minute (the tiny random model learns the format, not the
arithmetic, in four steps).""",
    ),
    ("code", "INSTALL"),
    ("code", "CPU_SETUP"),
    (
        "code",
        """\
MODEL_DIR = ""  # e.g. "/content/Qwen2.5-1.5B-Instruct"; empty: the tiny model
DATA = ""  # e.g. "/content/gsm8k_train.jsonl" (question / answer records)
QUANT = "nf4"  # "" keeps the base in bf16 (LoRA); "nf4", "int4", "int8": QLoRA
SEQ_LEN = 2048  # prompt + chain of thought, tokens
STEPS = 200
WORKDIR = "runs/lora_grpo"  # checkpoints (adapters only), metrics.jsonl""",
    ),
    ("md", "## The run's config"),
    (
        "code",
        """\
import json
import pathlib

from r1jax.config import presets, typed
from r1jax.model.hf_config import config_from_hf

if MODEL_DIR:
    hf = json.loads((pathlib.Path(MODEL_DIR) / "config.json").read_text())
    shape = config_from_hf(hf).to_dict()
    for key in ("compute_dtype", "remat_policy", "param_dtype"):
        shape.pop(key)
    config = presets.lora_grpo(shape, "", SEQ_LEN, rank=16, base_quant=QUANT)
    config.init_from = MODEL_DIR  # read one weight at a time, quantized as it lands
    config.data.update(tokenizer=MODEL_DIR, path=DATA, task="")
    config.train.steps = STEPS
else:  # the tiny model on the built-in arithmetic task
    config = presets.lora_grpo(presets.QWEN2_5_1_5B, "tiny", 0, rank=8, base_quant=QUANT)
stage = typed(config)
print(stage.lora)
print(f"{stage.model.num_params / 1e6:.1f}M params, {stage.grpo.num_prompts} prompt(s) x "
      f"{stage.grpo.num_samples} samples of up to {stage.grpo.max_new_tokens} new tokens")""",
    ),
    ("md", "## Does it fit? `r1jax plan` on this device"),
    (
        "code",
        """\
from r1jax.commands.plan import plan

result = plan(stage, "local")
for name, program in result["programs"].items():
    peak = program["peak_bytes_per_chip"] / 2**30
    print(f"{name:16s} peak {peak:6.2f} GiB  fits: {program['fits']}")""",
    ),
    ("md", "## Train the adapters"),
    (
        "code",
        """\
from r1jax.train import loop
from r1jax.train.metrics import read_metrics

last = loop.run(stage, WORKDIR)
records = [r for r in read_metrics(pathlib.Path(WORKDIR) / "metrics.jsonl") if "reward/total" in r]
for r in records:
    print(r["step"], f"reward {r['reward/total']:.3f}", f"kl {r['kl']:.2e}")""",
    ),
    (
        "code",
        """\
import matplotlib.pyplot as plt

plt.plot([r["step"] for r in records], [r["reward/total"] for r in records], marker="o")
plt.xlabel("step")
plt.ylabel("mean reward")
plt.title("GRPO with LoRA");""",
    ),
    ("md", "## Export: PEFT adapters, or a merged checkpoint"),
    (
        "code",
        """\
from r1jax.commands import convert

peft_dir = f"{WORKDIR}/peft"
convert.main([
    "--config.convert.direction=r1jax-to-peft",
    f"--config.convert.input={WORKDIR}",
    f"--config.convert.output={peft_dir}",
])
print(sorted(p.name for p in pathlib.Path(peft_dir).iterdir()))
# Merged into the base it trained on (for QLoRA: the unquantized base), as Hugging Face files:
convert.main([
    "--config.convert.direction=r1jax-to-hf",
    f"--config.convert.input={WORKDIR}",
    f"--config.convert.output={WORKDIR}/merged",
])""",
    ),
]
