"""The stage-3 step built for accelerators: no graph breaks, no host syncs, fixed MLM
slots, FlexAttention equal to SDPA, selective checkpointing equal to none (tiny model).
The step is the elastic one: drop path (tiny: 0.1), text dropout and ITM negatives keyed by
the step key and the sample ids, all from tensors on the device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmo_composer import VLMo, VLMoConfig
from vlmo_composer.model.attention import AttentionBias, attend, padded_length
from vlmo_composer.common.keyed_draws import step_key
from vlmo_composer.objectives.mlm import IGNORE_INDEX, masked_logits, mlm_loss
from vlmo_composer.training.profiling import HostSyncCounter, graph_breaks, synthetic_vl_batch
from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig, VLPretrainTask


@pytest.fixture(scope="module")
def task_and_batch():
    torch.manual_seed(0)
    task = VLPretrainTask(VLPretrainConfig(model={"size": "tiny"}))
    task.train()
    task.draw_key = step_key(17, 3)
    assert task.config.drop_path_rate > 0
    return task, {**synthetic_vl_batch(task.config, 4), "sample_index": torch.tensor([9, 2, 5, 0])}


def test_stage3_step_compiles_without_graph_breaks(task_and_batch):
    count, reasons = graph_breaks(*task_and_batch)
    assert count == 0, reasons


def test_stage3_step_has_no_host_syncs(task_and_batch):
    task, batch = task_and_batch
    task(batch)["losses"]["total"].backward()  # a first step may check batch sizes once
    with HostSyncCounter() as counter:
        task(batch)["losses"]["total"].backward()
        task.flops_per_batch(batch)
    assert counter.total == 0, counter.counts


def test_sync_counter_sees_boolean_indexing_and_item():
    x = torch.arange(6.0)
    with HostSyncCounter() as counter:
        x[x > 2].sum().item()
    assert counter.counts == {"boolean indexing": 1, "item": 1}


def test_fixed_mlm_slots_equal_the_masked_token_loss():
    torch.manual_seed(0)
    states = torch.randn(3, 10, 8)
    labels = torch.full((3, 10), IGNORE_INDEX)
    labels[0, [2, 5, 7]] = torch.tensor([1, 2, 3])
    labels[1, 9] = 4  # row 2 has none masked
    head = torch.nn.Linear(8, 6)
    logits, slot_labels = masked_logits(states, labels, head, num_slots=3)
    assert logits.shape == (3, 3, 6)
    selected = labels != IGNORE_INDEX
    expected = F.cross_entropy(head(states[selected]), labels[selected])
    assert torch.allclose(mlm_loss(logits, slot_labels), expected, atol=1e-6)
    none = mlm_loss(*masked_logits(states, torch.full_like(labels, IGNORE_INDEX), head, 3))
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(RuntimeError, match="more masked tokens than MLM slots"):
        masked_logits(states, labels, head, num_slots=2)


def test_flex_attention_matches_sdpa_with_gradients():
    """fp32, eager flex on CPU: output and the grads of q, k, v and the relative table."""
    torch.manual_seed(0)
    batch, heads, n, d, rows = 2, 3, 13, 8, 20
    q, k, v = (torch.randn(batch, heads, n, d, requires_grad=True) for _ in range(3))
    table = torch.randn(rows, heads, requires_grad=True)
    index = F.pad(torch.randint(0, rows, (n, n)), (0, padded_length(n) - n))
    valid = torch.ones(batch, n, dtype=torch.bool)
    valid[0, -4:] = False
    bias = AttentionBias(table, index, valid)
    results = []
    for kind in ("sdpa", "flex"):
        out = attend(q, k, v, bias, kind)
        results.append((out, torch.autograd.grad(out.square().sum(), (q, k, v, table))))
    (out_s, grads_s), (out_f, grads_f) = results
    assert (out_s - out_f).abs().max() <= 1e-5
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(grads_s, grads_f))
    assert bias.dense_mask(torch.float32).stride(-2) == padded_length(n)  # aligned rows


def _step_grads(config: VLMoConfig, batch: dict) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(0)
    model = VLMo(config)
    model.train()
    out = model.fuse(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    loss = out.pooled.square().sum() + out.text_states.mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_selective_checkpointing_equals_no_checkpointing(attention):
    """Same loss and gradients, dropout and drop path included (RNG replayed in recompute).
    With flex the kernel runs between the two checkpointed regions (torch 2.7's caching
    mode has no rule for its higher-order op: inside a region it raised)."""
    config = VLMoConfig.named("tiny", drop_path_rate=0.2, attention=attention)
    batch = synthetic_vl_batch(config, 3)
    loss, grads = _step_grads(config, batch)
    sel_loss, sel_grads = _step_grads(
        config.replace(activation_checkpointing=True, checkpoint_policy="selective"), batch
    )
    assert torch.equal(loss, sel_loss)
    assert grads.keys() == sel_grads.keys()
    assert all(torch.allclose(grads[n], sel_grads[n], atol=1e-6) for n in grads)


def test_selective_checkpointing_keeps_matmul_outputs_and_meets_the_base_memory_gate():
    """Base, bf16 autocast, the CUDA default attention (flex), shapes only (fake tensors):
    what autograd keeps is the matmul outputs, the residual inputs and the kernel's own
    saved tensors, <= 0.32 GiB per sample (issue 11's gate), about a third of no checkpointing."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from step_gates import GIB_PER_SAMPLE_GATE, base_memory_and_flops

    selective, _, _ = base_memory_and_flops(2, checkpointing=True, attention="flex")
    assert selective <= GIB_PER_SAMPLE_GATE
    _, flop_ratio, _ = base_memory_and_flops(2, checkpointing=True, attention="sdpa")
    assert 0.97 <= flop_ratio <= 1.03  # recompute re-runs no matmul


def test_the_compiled_step_does_not_recompile_after_the_first_step():
    """fullgraph compile (aot_eager: the graph capture inductor gets, without its C++ build): one
    graph, kept at step 2. A Python cache filled inside the graph (the relative index) made a
    guard fail at step 2."""
    from vlmo_composer.training.profiling import compiled_graphs

    torch._dynamo.reset()
    torch.manual_seed(0)
    task = VLPretrainTask(VLPretrainConfig(model={"size": "tiny", "drop_path_rate": 0.2}))
    task.train()
    batch = {**synthetic_vl_batch(task.config, 4), "sample_index": torch.tensor([9, 2, 5, 0])}
    step = torch.compile(task, fullgraph=True, backend="aot_eager")
    before, graphs = compiled_graphs(), []  # the counter is per process
    for number in range(2):
        task.draw_key = step_key(17, number)  # keyed negatives and drop path: a new step, the same graph
        step(batch)["losses"]["total"].backward()
        graphs.append(compiled_graphs() - before)
    assert graphs == [1, 1], graphs
