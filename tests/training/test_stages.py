"""Each pre-training stage trains on synthetic shards; freezing, logging and stage chaining."""

from __future__ import annotations

import torch

from vlmo_composer.tasks.text_mlm import TEXT_STAGE_TRAINABLE
from vlmo_composer.training.train import build_trainer
from training.helpers import in_memory_logger, stage_config


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_stage1_vision_mim_trains_attention_and_v_ffn_only(synthetic_data, tmp_path):
    trainer = build_trainer(stage_config("vision_mim", synthetic_data, tmp_path))
    task = trainer.state.model
    before = snapshot(task)
    trainer.fit()
    after = snapshot(task)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert "model.transformer.blocks.0.attn.qkv.weight" in changed
    assert "model.transformer.blocks.1.mlp_imag.fc1.weight" in changed
    assert "mim_head.weight" in changed and "mim_mask_token" in changed
    assert not any("mlp_text" in n or "text_embeddings" in n for n in changed)
    losses = in_memory_logger(trainer).data["loss/train/mim"]
    assert len(losses) == 3 and all(torch.isfinite(torch.as_tensor(v)) for _, v in losses)
    trainer.close()


def test_stage2_changes_only_the_unfrozen_parameters(synthetic_data, tmp_path):
    trainer = build_trainer(stage_config("text_mlm", synthetic_data, tmp_path))
    model = trainer.state.model.model
    layout_rows = model.layout.num_image_rows + 2
    before = snapshot(model)
    trainer.fit()
    after = snapshot(model)
    import fnmatch

    trainable = {n for n in before if any(fnmatch.fnmatchcase(n, p) for p in TEXT_STAGE_TRAINABLE)}
    for name in before:
        if name in trainable:
            continue
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
    for name in ("transformer.blocks.0.mlp_text.fc1.weight", "text_embeddings.word_embeddings.weight",
                 "mlm_score.decoder.weight", "transformer.norm.weight"):
        assert not torch.equal(before[name], after[name]), f"trainable {name} did not change"
    table_before, table_after = before["relative_position_bias_table"], after["relative_position_bias_table"]
    assert torch.equal(table_before[:layout_rows], table_after[:layout_rows])  # image and cross-modal rows
    assert not torch.equal(table_before[layout_rows:], table_after[layout_rows:])  # text rows learn
    # Frozen parameters are not in the optimiser at all (so DDP does not reduce them either).
    optimised = {id(p) for g in trainer.state.optimizers[0].param_groups for p in g["params"]}
    assert all(id(p) not in optimised for p in model.parameters() if not p.requires_grad)
    assert not model.transformer.blocks[0].mlp_imag.fc1.weight.requires_grad
    trainer.close()


def test_stage3_logs_each_loss_term_and_chains_from_stage2(synthetic_data, tmp_path):
    stage1 = build_trainer(stage_config("vision_mim", synthetic_data, tmp_path))
    stage1.fit()
    stage1.close()
    ckpt1 = tmp_path / "vision_mim" / "ep0-ba3-rank0.pt"
    assert ckpt1.exists()

    stage2 = build_trainer(stage_config("text_mlm", synthetic_data, tmp_path, load_path=str(ckpt1),
                                        load_weights_only=True, load_strict_model_weights=False,
                                        load_ignore_keys=["state/model/mim_*"]))
    stage1_state = torch.load(ckpt1, weights_only=False)["state"]["model"]
    qkv = "model.transformer.blocks.1.attn.qkv.weight"
    assert torch.equal(stage2.state.model.state_dict()[qkv], stage1_state[qkv])
    stage2.fit()
    stage2.close()
    ckpt2 = tmp_path / "text_mlm" / "ep0-ba3-rank0.pt"
    stage2_state = torch.load(ckpt2, weights_only=False)["state"]["model"]
    assert not any("mlp_vl" in k for k in stage2_state)  # the text stage has no VL-FFN, as the official one

    stage3 = build_trainer(stage_config("vl_pretrain", synthetic_data, tmp_path, load_path=str(ckpt2),
                                        load_weights_only=True, load_strict_model_weights=False))
    loaded = stage3.state.model.state_dict()
    for key in (qkv, "model.transformer.blocks.0.mlp_text.fc2.weight", "model.text_embeddings.word_embeddings.weight"):
        assert torch.equal(loaded[key], stage2_state[key]), key
    assert "model.transformer.blocks.1.mlp_vl.fc1.weight" in loaded  # newly initialised VL-FFN
    stage3.fit()
    data = in_memory_logger(stage3).data
    for term in ("itc", "itm", "mlm", "total"):
        assert len(data[f"loss/train/{term}"]) == 3, term
    total = data["loss/train/total"][-1][1]
    parts = {t: data[f"loss/train/{t}"][-1][1] for t in ("itc", "itm", "mlm")}
    assert abs(float(total) - (parts["itc"] + parts["itm"] + 0.25 * parts["mlm"])) < 1e-4
    stage3.close()


def test_vision_stage_can_start_from_beit_weights(tmp_path):
    """`init_from: {kind: beit}` loads a timm BEiT file into the stage-1 task."""
    import timm

    from vlmo_composer.training.builders import build_task

    beit = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "beit.pth"
    torch.save({"model": beit.state_dict()}, path)
    task = build_task({"name": "vision_mim", "model": {"size": "base"},
                       "init_from": {"kind": "beit", "path": str(path)}})
    block = task.model.blocks[5]
    assert torch.equal(block.mlp_imag.fc2.weight, beit.blocks[5].mlp.fc2.weight)
    assert torch.equal(block.attn.qkv.weight, beit.blocks[5].attn.qkv.weight)
    assert not block.mlp_text.fc1.weight.requires_grad and block.mlp_imag.fc1.weight.requires_grad


def test_algorithms_from_the_yaml_run(synthetic_data, tmp_path):
    cfg = stage_config("vl_pretrain", synthetic_data, tmp_path, max_duration="2ba",
                       algorithms={"gradient_clipping": {"clipping_type": "norm", "clipping_threshold": 1.0},
                                   "ema": {"half_life": "1ba"}})
    trainer = build_trainer(cfg)
    names = sorted(type(a).__name__ for a in trainer.state.algorithms)
    assert names == ["EMA", "GradientClipping"]
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 2
    trainer.close()
