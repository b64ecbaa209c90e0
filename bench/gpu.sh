#!/usr/bin/env bash
# One H200, within ~8 minutes: the stage-3 step at base (batch 64 and 128, bf16,
# eager vs compiled, SDPA vs flex: samples/s, peak GiB, MFU vs 989 and 790 TFLOP/s,
# attention kernel), then 5 steps of yamls/pretrain/vl_large.yaml under its sharding.
# Run through the device tool from the repository root with carry [".whl"]:
#   bash bench/gpu.sh          (logs under $OUT, a short table printed last)
# The device's python has torch 2.11 and no Composer/Streaming: the carried wheels
# are installed with --no-deps into a private directory (Composer pins torch < 2.7.1).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
SITE=$(mktemp -d)
python3 -m pip install --quiet --no-deps --target "$SITE" .whl/*.whl >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
export PYTHONPATH="$PWD:$SITE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
python3 -c "import torch, composer, streaming; print('torch', torch.__version__, 'composer', composer.__version__)" | tee "$OUT/versions.txt"

# 1) Base, eager (SDPA, flex): ~2 min. 2) Base, compiled (SDPA, flex): ~3 min incl. compile.
timeout 200 python3 bench/train_step.py --size base --batch 64 128 --precision bf16 --compile off \
    --attention sdpa flex --checkpointing selective --steps 10 --warmup 3 >"$OUT/base_eager.log" 2>&1
timeout 270 python3 bench/train_step.py --size base --batch 64 128 --precision bf16 --compile on \
    --attention sdpa flex --checkpointing selective --steps 10 --warmup 3 >"$OUT/base_compiled.log" 2>&1

# 3) Large recipe, 5 steps on synthetic 224 px data, the recipe's parallelism_config: ~1.5 min.
DATA=$(mktemp -d)
timeout 60 python3 data_prep/make_synthetic.py --out "$DATA" --image-size 224 --train 160 --val 20 --test 20 \
    >"$OUT/large_data.log" 2>&1
python3 bench/gpu_large_recipe.py "$DATA" "$OUT/vl_large_5ba.yaml" 16
timeout 150 python3 -m composer.cli.launcher -n 1 train.py "$OUT/vl_large_5ba.yaml" >"$OUT/large.log" 2>&1
echo "large exit: $?" >>"$OUT/large.log"

echo; echo "== base, eager =="; grep -A8 "^stage-3 step" "$OUT/base_eager.log" || tail -5 "$OUT/base_eager.log"
echo "== base, compiled =="; grep -A8 "^stage-3 step" "$OUT/base_compiled.log" || tail -5 "$OUT/base_compiled.log"
echo "== large, 5 steps =="; grep -E "throughput/samples_per_sec|memory/peak_allocated_mem|large exit|Error" "$OUT/large.log" | tail -8
