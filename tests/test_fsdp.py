"""FSDP (configs/accelerate/fsdp.yaml), as far as a CPU can prove it.

accelerate turns FSDP on only for GPU-like devices: under `accelerate launch --config_file fsdp.yaml` on a CPU
each process is a plain MULTI_CPU (DDP-style) one, so the trainer's FSDP branch cannot run end to end here.
What runs here instead:
- the shipped config, read by accelerate's own launcher code, gives an FSDP2 plugin with the transformer-based
  wrap policy and bf16; with the trainer's marking, that policy picks exactly the LLM's decoder layers of each
  layout (Tarsier2's Qwen2-VL, Tarsier1's LLaVA -> VideoLLM, the project's presets);
- the checkpoint code the trainer calls under FSDP, on a tiny Tarsier2 really sharded by torch's FSDP2
  (`fully_shard`, 2 processes, gloo): the gathered weights and optimizer state are those of one unsharded
  process, and a run resumed from them continues exactly;
- a VideoLLM with tied embeddings written from a gathered state dict loads as the usual save does.
Run as a script (`python -m torch.distributed.run --nproc_per_node 2 tests/test_fsdp.py TINY OUT`) it is the
sharded worker of the second test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

ANSWERS = ["A red circle moves, then a blue square grows.", "The camera pans to the left."]


def _prepared(folder, shard: bool = False):
    """The trainer's Tarsier2 set-up on a CPU: float32, vision frozen, AdamW over decay / no-decay groups;
    sharded first when asked (the optimizer then holds the sharded parameters, as accelerate arranges)."""
    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.finetune import freeze, optimizer_param_names

    model = ckpt.load_folder(folder)
    model.float()
    freeze(model, train_vision=False)
    if shard:
        _shard(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, scheduler, optimizer_param_names(model, optimizer)


def _batch(model, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    clips = [torch.randint(0, 256, (2, 84, 112, 3), generator=g, dtype=torch.uint8).numpy() for _ in range(2)]
    return model.processor.inputs(clips, ["Describe the video in detail."] * 2, ANSWERS)


def _step(model, optimizer, batch) -> None:
    loss, _ = model(**batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _shard(model) -> None:
    """What accelerate's FSDP2 preparation does with fsdp.yaml: each marked decoder layer, then the root."""
    from torch.distributed.fsdp import fully_shard

    from tarsier.trainers.finetune import mark_fsdp_units

    units = mark_fsdp_units(model)
    for module in list(model.modules()):
        if type(module).__name__ in units:
            fully_shard(module)
    fully_shard(model)


def _sharded_worker(tiny: Path, out: Path) -> None:
    """One step sharded, a checkpoint gathered as the trainer does, then one more step both continued and
    resumed from the checkpoint; rank 0 writes the folders the test compares."""
    import torch.distributed as dist

    from tarsier.trainers.finetune import (
        OptimizerState,
        gather_full_optimizer,
        gather_full_weights,
        load_full_optimizer_state,
    )
    from tarsier.trainers.state import load_trainer_state, save_trainer_state
    from tarsier.trainers.train import save_model_folder

    dist.init_process_group("gloo")
    main = dist.get_rank() == 0
    model, optimizer, scheduler, names = _prepared(tiny, shard=True)
    _step(model, optimizer, _batch(model, 0))
    weights, state = gather_full_weights(model), gather_full_optimizer(model, optimizer, names)
    if main:
        save_model_folder(model, out / "ckpt", False, weights)
        save_trainer_state(out / "ckpt", optimizer=state, scheduler=scheduler, step=1, data_state={}, extra={})
    dist.barrier()
    resumed, optimizer2, scheduler2, names2 = _prepared(out / "ckpt", shard=True)
    saved = OptimizerState()
    load_trainer_state(out / "ckpt", optimizer=saved, scheduler=scheduler2)
    load_full_optimizer_state(resumed, optimizer2, saved.state, names2)
    for name, m, opt in (("continued", model, optimizer), ("resumed", resumed, optimizer2)):
        _step(m, opt, _batch(m, 1))
        weights = gather_full_weights(m)
        if main:
            save_model_folder(m, out / name, False, weights)
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
def test_fsdp_config_wraps_the_decoder_layers_of_every_layout(tmp_path, monkeypatch):
    """fsdp.yaml through accelerate's launcher code (config file -> environment -> plugin): FSDP2, bf16,
    full state dicts, the transformer-based policy with no class list; on each layout, after the trainer's
    marking, that policy selects exactly the LLM's decoder layers (one FSDP unit per layer)."""
    import published_fixtures as pf
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env

    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.finetune import llm_of, mark_fsdp_units
    from tarsier.trainers.train import TrainArgs, build_or_load

    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", "2", "train.py"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert "FSDP_TRANSFORMER_CLS_TO_WRAP" not in env   # a fixed list would fail on every other layout
    for key, value in env.items():
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and str(plugin.state_dict_type).endswith("FULL_STATE_DICT")

    tiny = build_or_load(TrainArgs(stage="stage1", data="", out="", init="tiny-random"), ["a red circle moves"])[0]
    models = {"Qwen2VLDecoderLayer": ckpt.load_folder(pf.write_qwen2_vl(tmp_path / "tarsier2", style="llava")),
              "LlamaDecoderLayer": ckpt.load_folder(pf.write_llava(tmp_path / "tarsier1")),
              "LlamaDecoderLayer ": tiny}
    for expected, model in models.items():
        assert mark_fsdp_units(model) == [expected.strip()]
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        units = [m for m in model.modules() if policy(m)]
        assert units and all(a is b for a, b in zip(units, llm_of(model).layers, strict=True)), expected


@pytest.mark.slow   # two processes of a 152,064-row vocabulary: about a minute on 2 idle cores
def test_sharded_checkpoint_is_the_single_process_one_and_resumes_exactly(tmp_path):
    """A tiny Tarsier2 sharded over 2 gloo processes by FSDP2: the weights and AdamW state the trainer's
    gather writes equal one unsharded process's after the same step; a run resumed from that checkpoint
    takes the next step exactly as the uninterrupted sharded run, and as the single process."""
    import published_fixtures as pf
    from safetensors.torch import load_file

    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.state import OPTIM_NAME, optimizer_to_flat

    tiny = pf.write_qwen2_vl(tmp_path / "tiny", style="llava")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           __file__, str(tiny), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    model, optimizer, _, _ = _prepared(tiny)   # the same steps, unsharded, in this process
    _step(model, optimizer, _batch(model, 0))

    def worst(a: dict, b: dict) -> float:
        assert a.keys() == b.keys()
        return max((a[k].float() - b[k].float()).abs().max().item() for k in a)

    # the sharded step is the single step up to float summation order (measured: weights 1.06e-5 where an
    # lr 1e-2 step moves a weight by about 1e-2; AdamW moments 3e-8), as the DDP test finds for DDP
    assert worst(ckpt.load_folder(out / "ckpt").hf.state_dict(), model.hf.state_dict()) < 1e-4
    single, _ = optimizer_to_flat(optimizer)
    assert worst(load_file(str(out / "ckpt" / OPTIM_NAME)), single) < 1e-6
    _step(model, optimizer, _batch(model, 1))
    continued = ckpt.load_folder(out / "continued").hf.state_dict()
    resumed = ckpt.load_folder(out / "resumed").hf.state_dict()
    assert all(torch.equal(continued[k], resumed[k]) for k in continued)
    assert worst(resumed, model.hf.state_dict()) < 1e-4
    # the step moved the trained weights (the comparison is not between two untouched models)
    assert worst(resumed, ckpt.load_folder(out / "ckpt").hf.state_dict()) > 1e-4


def test_a_gathered_state_dict_with_tied_embeddings_saves_as_the_usual_save(tmp_path):
    """The project's VideoLLM ties its embeddings and LM head: written from a full state dict (what the FSDP
    gather returns) less the tied duplicates, the folder loads with the same weights as save_model's."""
    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.finetune import tied_duplicates
    from tarsier.trainers.train import TrainArgs, build_or_load, save_model_folder

    model = build_or_load(TrainArgs(stage="stage1", data="", out="", init="tiny-random"), ["a red circle moves"])[0]
    duplicates = tied_duplicates(model)
    assert duplicates   # tiny-random ties them
    full = {n: t.detach().clone() for n, t in model.state_dict().items()}   # a gather's copies share nothing
    save_model_folder(model, tmp_path / "usual", lora=False)
    save_model_folder(model, tmp_path / "gathered", lora=False, weights=full, duplicates=duplicates)
    a = ckpt.load_folder(tmp_path / "usual").state_dict()
    b = ckpt.load_folder(tmp_path / "gathered").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


if __name__ == "__main__":
    _sharded_worker(Path(sys.argv[1]), Path(sys.argv[2]))
