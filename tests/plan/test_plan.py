"""``r1jax plan``: its memory figures are the compiler's, its FLOPs the analytic count, its
collectives those in the HLO; it exits 1 when a program does not fit; TPU slices by name."""

import json
import os

import jax
import pytest

from r1jax.commands import plan as plan_command
from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.model.attention_kernels import target_platform
from r1jax.plan import analysis, programs, targets
from r1jax.sharding import make_mesh

TINY_GRPO = [
    "--config=configs/grpo_tiny.py",
    "--config.grpo.num_prompts=2",
    "--config.grpo.num_samples=4",
    "--config.grpo.max_new_tokens=16",
    "--config.data.buckets=(32,)",
]


def _stage(*argv):
    config, _ = parse_config(list(argv), command="t", default="x")
    return typed(config)


def _require_tpu_compiler(topology: str = "v5e-1"):
    """Skips without the TPU compiler, except in CI's TPU step (``R1JAX_REQUIRE_TPU_COMPILER``),
    where its absence fails the test."""
    try:
        targets.resolve_target(topology)
    except RuntimeError:
        if os.environ.get("R1JAX_REQUIRE_TPU_COMPILER"):
            raise
        pytest.skip("no TPU compiler in this environment")


@pytest.mark.slow  # moved to CI's slow step: the default suite measured 10m33s idle
def test_figures_are_the_compilers_and_the_analytic_count():
    stage = _stage(*TINY_GRPO)
    mesh = make_mesh(stage.mesh)
    result = plan_command.plan(stage, "local")
    assert set(result["programs"]) == {"train_step", "sampler_prefill", "sampler_decode"}
    assert result["chips"] == len(jax.devices()) == 8 and result["seq_len"] == 32 + 16
    step = programs.train_step(stage, mesh)
    lowered = step.lower()
    with jax.set_mesh(mesh):  # what ``step()`` of ``make_train_step`` runs
        assert lowered.as_text() == step.fn.lower(*step.args).as_text()
    # the model's activation constraints (no-ops without an ambient mesh) are in the program
    constraints = lowered.as_text().count("sharding_constraint")
    assert constraints > step.fn.lower(*step.args).as_text().count("sharding_constraint")
    memory = lowered.compile().memory_analysis()
    got = result["programs"]["train_step"]
    assert got["temp_bytes_per_chip"] == memory.temp_size_in_bytes
    assert got["argument_bytes_per_chip"] == memory.argument_size_in_bytes
    assert got["peak_bytes_per_chip"] == (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    model, rows, seq = stage.model, 8, 48
    forward = 2 * programs.matmul_params(model) * rows * seq
    forward += programs.attention_flops(model, rows, seq, seq / 2)
    reference = forward  # beta > 0: the reference's forward
    assert got["flops"] == pytest.approx(3 * forward + reference)
    assert got["flops_per_chip"] == pytest.approx(got["flops"] / 8)
    assert got["fits"] and result["fits"]
    # data parallel over 8 devices: the gradients are all-reduced
    assert got["collectives"]["all-reduce"]["count"] >= 1


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_continuous_batching_is_planned_as_one_program():
    """``grpo.decode_slots``: the sampler's prefill and slot loop compile as one program, with
    the slots' KV cache (4 slots of 48 tokens, then 2, then 1) instead of the 8 rows'."""
    stage = _stage(*TINY_GRPO, "--config.grpo.decode_slots=4", "--config.grpo.decode_min_slots=1")
    result = plan_command.plan(stage, "local")
    assert set(result["programs"]) == {"train_step", "sampler_continuous"}
    got = result["programs"]["sampler_continuous"]
    assert got["fits"] and got["compile_error"] is None
    (program,) = programs.continuous_sampler(stage, make_mesh(stage.mesh))
    out = jax.eval_shape(program.fn, *program.args)
    assert out.cache.k.shape[1] == 1 and out.tokens_RT.shape == (8, 16)  # the last phase's


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_a_paged_cache_is_planned_with_its_pages():
    """``grpo.decode_page_size``: the continuous program over a store of pages: 1 null page,
    2 prompts x 4 prompt pages, 6 generation pages (fewer than 4 slots x 3)."""
    flags = ["--config.grpo.decode_slots=4", "--config.grpo.decode_page_size=8"]
    stage = _stage(*TINY_GRPO, *flags, "--config.grpo.decode_pages=6")
    result = plan_command.plan(stage, "local")
    got = result["programs"]["sampler_continuous"]
    assert got["fits"] and got["compile_error"] is None
    (program,) = programs.continuous_sampler(stage, make_mesh(stage.mesh))
    out = jax.eval_shape(program.fn, *program.args)
    assert out.cache.pages.k.shape[2] == 1 + 2 * 4 + 6 and out.cache.pages.table.shape == (4, 6)
    # 8 slots on data=8: one store per shard (its prompt's 4 pages, 3 generation pages), the
    # stores split over the devices, not one store on each
    split = _stage(*TINY_GRPO, *flags[1:], "--config.grpo.decode_slots=8", "--config.mesh.data=8")
    (program,) = programs.continuous_sampler(split, mesh := make_mesh(split.mesh))
    out = jax.eval_shape(program.fn, *program.args)
    assert out.cache.pages.k.shape[:4] == (8, 2, 2, 1 + 4 + 3)  # [D, K, L, N / D]
    with jax.set_mesh(mesh):
        compiled = program.fn.lower(*program.args).compile()
    assert compiled.output_shardings.cache.pages.k.spec[0] == "data"


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_partial_rollouts_are_planned_as_admit_and_advance():
    """``grpo.partial_lanes``: admitting a batch and advancing the pool compile, the pool
    (4 lanes' prompts, 4 slots' cache, 16 rows) donated and returned in place."""
    flags = ["--config.grpo.decode_slots=4", "--config.grpo.partial_lanes=4"]
    stage = _stage(*TINY_GRPO, *flags)
    result = plan_command.plan(stage, "local")
    assert set(result["programs"]) == {"train_step", "sampler_admit", "sampler_advance"}
    for name in ("sampler_admit", "sampler_advance"):
        got = result["programs"][name]
        assert got["fits"] and got["compile_error"] is None, name
    admit, advance = programs.partial_rollout_sampler(stage, make_mesh(stage.mesh))
    out = jax.eval_shape(advance.fn, *advance.args)
    assert out.slots.cache.k.shape[1] == 4 and out.slots.tokens_RT.shape == (16, 16)
    assert out.prompts.k.shape[1] == 4
    alias = advance.lower().compile().as_text()
    assert "input_output_alias" in alias  # the pool is donated: updated in place
    paged = _stage(*TINY_GRPO, *flags, "--config.grpo.decode_page_size=8")
    admit, advance = programs.partial_rollout_sampler(paged, make_mesh(paged.mesh))
    out = jax.eval_shape(advance.fn, *advance.args)
    assert out.slots.cache.pages.k.shape[2] == 1 + 4 * 4 + 4 * 3  # null, lanes', generation
    assert advance.lower().compile() is not None
    # 8 pool shards on data=8 (``grpo.partial_shards``): each its 2 lanes' prompt pages (one
    # sample of each batch's prompts), 1 slot's 3 generation pages; one shard per device
    split = ["--config.grpo.decode_slots=8", "--config.grpo.decode_page_size=8"]
    split += ["--config.mesh.data=8", "--config.grpo.partial_shards=8"]
    shards = _stage(*TINY_GRPO, *flags[1:], *split)
    admit, advance = programs.partial_rollout_sampler(shards, mesh := make_mesh(shards.mesh))
    out = jax.eval_shape(advance.fn, *advance.args)
    assert out.slots.cache.pages.k.shape[:4] == (8, 2, 2, 1 + 2 * 4 + 3)
    with jax.set_mesh(mesh):
        compiled = advance.fn.lower(*advance.args).compile()
    assert compiled.output_shardings.slots.cache.pages.k.spec[0] == "data"
    assert admit.lower().compile() is not None


@pytest.mark.slow  # moved to CI's slow step: the default suite measured 10m33s idle
def test_a_run_that_does_not_fit_exits_1_and_says_what_dominates(capsys):
    # 2M x 512 embedding: 4 GiB of fp32 params, 12 GiB with Adam, on every data-parallel device
    big = [*TINY_GRPO, "--config.model.vocab_size=2097152", "--config.model.hidden_size=512"]
    big += ["--config.model.head_dim=128", "--config.model.num_layers=1"]
    assert plan_command.main([*big, "--topology=local", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["fits"] and not result["programs"]["train_step"]["fits"]
    dominant = result["programs"]["train_step"]["dominant"]
    assert {d["what"] for d in dominant} >= {"temporaries", "argument state.opt_state"}
    sizes = [d["bytes_per_chip"] for d in dominant]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > result["hbm_bytes_per_chip"] / 4


def test_collectives_are_read_from_hlo_text():
    hlo = """
  %all-reduce.1 = f32[1024]{0} all-reduce(f32[1024]{0} %x), replica_groups={}
  %ag = (bf16[4,128]{1,0}, bf16[8,128]{1,0}) all-gather-start(bf16[4,128]{1,0} %y)
  %add = f32[4]{0} add(f32[4]{0} %a, f32[4]{0} %b)
  %rs = bf16[2,64]{1,0} reduce-scatter(bf16[16,64]{1,0} %z), dimensions={0}
"""
    assert analysis.collectives(hlo) == {
        "all-gather": {"count": 1, "bytes": 8 * 128 * 2},  # the result, not the operand
        "all-reduce": {"count": 1, "bytes": 4096},
        "reduce-scatter": {"count": 1, "bytes": 2 * 64 * 2},
    }


def test_a_program_the_compiler_refuses_for_lack_of_hbm_is_reported_as_not_fitting():
    stage = _stage(*TINY_GRPO)
    step = programs.train_step(stage, make_mesh(stage.mesh))
    error = RuntimeError(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (48.73G) exceeds available HBM (15.75G)."
    )
    figures = analysis._too_big(error, step)
    assert figures["temp"] == int(48.73 * 2**30) and figures["error"].startswith("RESOURCE")
    assert figures["args"] == sum(analysis.argument_groups(step).values()) > 0
    assert analysis._too_big(RuntimeError("INVALID_ARGUMENT: x"), step) is None


def test_slice_names_map_to_topologies_and_unknown_names_list_the_valid_ones():
    assert targets.tpu_topology("v5e-8") == ("v5e", "v5e:2x4")
    assert targets.tpu_topology("v5p-64") == ("v5p", "v5p:2x4x4")
    assert targets.tpu_topology("v5p-128") == ("v5p", "v5p:4x4x4")
    assert targets.tpu_topology("v6e-256") == ("v6e", "v6e:16x16")
    assert targets.tpu_topology("v4-8") == ("v4", "v4:2x2x1")
    with pytest.raises(ValueError, match="unknown topology 'v5e-7'; known: local, v4-8"):
        targets.tpu_topology("v5e-7")
    with pytest.raises(ValueError, match="unknown topology 'h100'"):
        plan_command.main([*TINY_GRPO, "--topology=h100"])


def test_a_tpu_slice_compiles_here_or_says_which_extra_to_install():
    try:
        target = targets.resolve_target("v5e-8")
    except RuntimeError as e:
        assert "pip install -e '.[tpu]'" in str(e)
        if os.environ.get("R1JAX_REQUIRE_TPU_COMPILER"):  # .ci/run's TPU step: never skip
            raise
        pytest.skip("no TPU compiler in this environment")
    assert target.chips == 8 and target.chip.hbm_bytes == int(15.75 * 2**30)
    with jax.set_mesh(make_mesh({"data": 1, "fsdp": -1}, devices=target.devices)):
        assert target_platform() == "tpu"  # "auto" attention picks splash, as on the slice
    assert target_platform() == jax.default_backend()
    result = plan_command.plan(_stage(*TINY_GRPO, "--config.mesh.preset=v5e-8"), "v5e-8")
    assert result["fits"] and result["mesh"] == {"data": 1, "fsdp": 8, "expert": 1, "tensor": 1}
    step = result["programs"]["train_step"]
    assert step["roofline_s"] > 0 and 0 < step["mfu_at_roofline"] <= 1
    assert "all-gather" in step["collectives"]  # fsdp gathers the params per layer


def test_on_tpu_the_decode_loop_keeps_its_state_in_the_layout_xla_chose():
    """The sampler (and so the plan) compiles decode with ``Layout.AUTO`` on TPU and has the
    prefill return the state in that layout: the donated KV cache goes from prefill through
    the loop and out without a copy (1.5B, 16 rows x 32,768 tokens on v5e-8: decode
    temporaries 1.24 GiB instead of 2.97, docs/scaling.md)."""
    try:
        target = targets.resolve_target("v5e-8")
    except RuntimeError:
        if os.environ.get("R1JAX_REQUIRE_TPU_COMPILER"):
            raise
        pytest.skip("no TPU compiler in this environment")
    stage = _stage(*TINY_GRPO, "--config.grpo.num_samples=8", "--config.mesh.preset=v5e-8")
    mesh = make_mesh(stage.mesh, devices=target.devices)
    with jax.set_mesh(mesh):
        assert target_platform() == "tpu"  # what makes the programs take the "auto" layout
    prefill, decode = (p.lower().compile() for p in programs.sampler(stage, mesh))
    state_in, state_out = decode.input_formats[0][1], decode.output_formats
    for field in ("k", "v"):
        formats = [getattr(s.cache, field) for s in (prefill.output_formats, state_in, state_out)]
        assert formats[0] == formats[1] == formats[2], field


def test_a_reward_model_is_planned_with_its_pairs():
    stage = _stage("--config=configs/reward_model_tiny.py", "--config.train.seq_len=64")
    assert stage.model.score_head  # the stage kind sets it
    result = plan_command.plan(stage, "local")
    assert set(result["programs"]) == {"train_step"}
    got = result["programs"]["train_step"]
    forward = 2 * programs.matmul_params(stage.model) * 2 * 16 * 64  # 16 pairs = 32 rows
    forward += programs.attention_flops(stage.model, 32, 64, 32)
    assert got["fits"] and got["flops"] == pytest.approx(3 * forward)


def test_top_k_distillation_is_planned_with_its_stored_targets():
    stage = _stage(
        "--config=configs/distill_tiny.py", "--config.distill.teacher=topk",
        "--config.distill.top_k=16", "--config.train.seq_len=64",
    )  # fmt: skip
    result = plan_command.plan(stage, "local")
    assert result["programs"]["train_step"]["fits"]
    batch = programs.train_step(stage, make_mesh(stage.mesh)).args[1]
    assert batch["teacher_topk_indices"].shape == batch["teacher_topk_logprobs"].shape
    assert batch["teacher_topk_logprobs"].shape == (16, 64, 16)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_a_mixture_of_experts_grpo_run_is_planned_with_its_active_flops():
    """The Qwen3-30B-A3B recipe's tiny variant (8 experts, 2 per token) on the local mesh,
    with experts split over the expert axis: FLOPs count the chosen experts only."""
    stage = _stage(
        "--config=configs/r1_zero_qwen3_30b_a3b.py:tiny", "--config.grpo.num_prompts=2",
        "--config.grpo.num_samples=4", "--config.grpo.max_new_tokens=16",
        "--config.data.buckets=(32,)", "--config.mesh.expert=2", "--config.mesh.data=-1",
    )  # fmt: skip
    result = plan_command.plan(stage, "local")
    assert result["fits"] and result["mesh"]["expert"] == 2
    model = stage.model
    assert programs.matmul_params(model) < model.num_params - model.vocab_size * 64
    got = result["programs"]["train_step"]
    forward = 2 * programs.matmul_params(model) * 8 * 48
    forward += programs.attention_flops(model, 8, 48, 24)
    assert got["flops"] == pytest.approx(3 * forward + forward)  # + the reference's forward


def test_qwen3_30b_a3b_grpo_at_16k_tokens_fits_v5p_64():
    """Issue 19's figure: 30.5B parameters (3.3B active), 32 rows x 16,384 tokens, experts over
    an expert axis of 8, the rest FSDP over 4 (36 GiB peak of 95.74 when planned)."""
    _require_tpu_compiler("v5p-64")
    stage = _stage("--config=configs/r1_zero_qwen3_30b_a3b.py:16384")
    # as the CLI runs: conftest's "highest" default precision makes the TPU compiler reject
    # the bf16 attention kernels ("Mosaic failed to compile TPU kernel: Bad lhs type")
    with jax.default_matmul_precision("default"):
        result = plan_command.plan(stage, "v5p-64")
    assert result["fits"], result["programs"]["train_step"]
    assert result["mesh"] == {"data": 1, "fsdp": 4, "expert": 8, "tensor": 1}


def test_qwen2_5_1_5b_grpo_update_at_32k_tokens_fits_v5e_8():
    """docs/scaling.md's figure: the 1.5B R1-Zero update at 32,768 tokens on v5e-8 (15.24 GiB
    peak of 15.75 when planned). Guards the margin: RoPE looked up from a table (as on CPU)
    left the layer scan when compiled for TPU and took it to 15.62 GiB."""
    _require_tpu_compiler("v5e-8")
    argv = ("--config=configs/r1_zero_qwen2_5_1_5b.py:32768", "--config.mesh.preset=v5e-8")
    with jax.default_matmul_precision("default"):  # as the CLI runs (see the test above)
        result = plan_command.plan(_stage(*argv), "v5e-8")
    train = result["programs"]["train_step"]
    assert result["fits"] and train["peak_bytes_per_chip"] < 15.4 * 2**30, train


def test_qwen2_5_1_5b_lora_grpo_at_8k_tokens_fits_one_v5e_chip():
    """Issue 20's figure: rank-32 adapters over a frozen bf16 base on ONE v5e chip (15.75 GiB),
    8 x 8,192 tokens (6.35 GiB train-step peak when planned; full fine-tuning of the same run
    needs 64 GiB). The frozen base, not its fp32 copy and Adam moments, is the state."""
    _require_tpu_compiler("v5e-1")
    stage = _stage("--config=configs/lora_qwen2_5_1_5b.py")
    with jax.default_matmul_precision("default"):  # as the CLI runs (see the test above)
        result = plan_command.plan(stage, "v5e-1")
    assert result["fits"] and result["seq_len"] == 8192, result["programs"]["train_step"]
    train = result["programs"]["train_step"]
    assert train["peak_bytes_per_chip"] < 10 * 2**30


def test_the_smallest_slice_search_passes_over_slices_before_compiling():
    """Qwen2.5-1.5B fully fine-tuned: on v5e-1 the fp32 params, Adam moments and reference
    alone exceed 15.75 GiB, so nothing compiles there; the first slice the planner reports
    fitting ends the search (the planner is a stand-in here: which slices reach it is the
    point)."""
    _require_tpu_compiler()
    from r1jax.plan.search import slice_names, smallest_slice

    assert slice_names("v5p")[:3] == ["v5p-8", "v5p-16", "v5p-32"]
    with pytest.raises(ValueError, match="unknown TPU generation 'h100'; known: v4, v5p"):
        slice_names("h100")
    planned = []

    def plan_on(stage, name, target, mesh, programs):
        planned.append(name)
        fits = name == "v5e-8"
        step = {"fits": fits, "peak_bytes_per_chip": 20 * 2**30}
        return {"topology": name, "fits": fits, "programs": {"train_step": step}}

    stage = _stage("--config=configs/lora_qwen2_5_1_5b.py", "--config.lora.rank=0")
    result = smallest_slice(stage, "v5e", plan_on=plan_on, log=lambda line: None)
    assert planned == ["v5e-4", "v5e-8"] and result["topology"] == "v5e-8"
    first, second, third = result["search"]
    assert first["topology"] == "v5e-1" and not first["fits"]
    assert "train_step's arguments alone need" in first["why"] and "HBM 15.75" in first["why"]
    assert second == {
        "topology": "v5e-4",
        "fits": False,
        "why": "compiled: train_step 20.00 GiB per chip (HBM 15.75)",
    }
    assert third["fits"]


def test_plan_names_the_smallest_slice_of_a_generation(capsys):
    """``--topology=v5e``: a data axis fixed at 4 cannot be laid on one chip, so v5e-1 is passed
    over and v5e-4 is compiled, fits and is named."""
    _require_tpu_compiler()
    argv = [*TINY_GRPO, "--config.mesh.data=4", "--config.mesh.fsdp=-1", "--topology=v5e"]
    assert plan_command.main(argv) == 0
    out = capsys.readouterr().out
    assert "v5e-1: passed over, no layout: config.mesh: 1 devices are not divisible" in out
    assert "v5e-4: fits" in out and out.rstrip().endswith("the smallest v5e slice it fits: v5e-4")
    assert plan_command.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["topology"] == "v5e-4" and result["mesh"]["data"] == 4
    assert [s["topology"] for s in result["search"]] == ["v5e-1", "v5e-4"]


def test_a_grpo_sampler_is_planned_with_the_train_state_it_leaves_on_the_chips():
    """While the sampler runs, the optimizer state and the reference stay in HBM: they count in
    its peak (it was checked against HBM on its own arguments alone). With LoRA the frozen base
    is the sampler's argument, so only the adapters' optimizer state is added."""
    stage = _stage(*TINY_GRPO, "--config.grpo.beta=0.04")
    mesh = make_mesh(stage.mesh)
    run = [programs.train_step(stage, mesh)]
    groups = analysis.argument_groups(run[0])
    resident = analysis.resident_while_sampling(run, stage.lora)
    kept = groups["state.opt_state"] + groups["state.frozen"]
    assert kept > 0 and 0 <= resident - kept < 64  # and the step counters
    assert analysis.resident_while_sampling([], stage.lora) == 0


def test_reward_model_flops_count_no_lm_head_and_async_collectives_count_their_results():
    model = _stage("--config=configs/reward_model_tiny.py").model
    assert model.score_head and model.tie_embeddings
    embed = model.vocab_size * model.hidden_size
    assert programs.matmul_params(model) == model.num_active_params - embed  # tied: no head
    hlo = (
        "%p = (f32[128,1024]{1,0}, f32[128,1024]{1,0}, u32[], u32[]) collective-permute-start(%x)\n"
        "%g = ((f32[2,4]{1,0}), (f32[16,4]{1,0})) all-gather-start(%a)\n"
    )
    got = analysis.collectives(hlo)
    assert got["collective-permute"]["bytes"] == 128 * 1024 * 4  # was twice: operand + result
    assert got["all-gather"]["bytes"] == 16 * 4 * 4


def test_local_accelerators_are_recognised_by_their_device_kind():
    """jax names a v5e "TPU v5 lite" (no spec was found: no roofline on local TPUs), and an
    A100 of 40 GB is sized by what its runtime allows (it was given 80 GB)."""

    class Device:
        def __init__(self, kind, platform="tpu", limit=None):
            self.device_kind, self.platform, self.limit = kind, platform, limit

        def memory_stats(self):
            return {"bytes_limit": self.limit} if self.limit else None

    for kind, chip in (("TPU v5 lite", "v5e"), ("TPU v5", "v5p"), ("TPU v6 lite", "v6e")):
        assert targets._local_chip([Device(kind)]) == targets.CHIPS[chip], kind
    a100 = targets._local_chip([Device("NVIDIA A100-SXM4-40GB", "gpu", 40 * 10**9)])
    assert a100.hbm_bytes == 40 * 10**9 and a100.peak_flops == targets.CHIPS["A100"].peak_flops
