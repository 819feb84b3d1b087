#!/usr/bin/env bash
# Every GPU check of issue #15 in one call on a lent GPU (device time is a few minutes per session,
# and each start costs about one): bf16 LoRA SFT speed against TRL's best setting with the share of
# the measured bf16 matmul peak, QLoRA through `studio train`, `studio generate` from that run,
# chat speed on the GPU, and a short PPO run (its loop moved to the GPU, checked there). Results land in $OUT (summary.txt plus one log per step).
#
#   bash bench/gpu_checks.sh pack      # here, once per session: wheels + the built-in model's
#                                      # config and tokenizer into .whl/ (ignored by git)
#   device run: command "source .whl/activate.sh && bash bench/gpu_checks.sh",
#               carry [".whl"], timeout_s 580
#
# Steps run most important first, each under its own time limit, so a slow step costs only itself.
# Without a GPU, `GPU_CHECKS_SMALL=1 PY=.venv/bin/python bash bench/gpu_checks.sh` runs the same
# steps on a toy model and 16 rows: a check of this script, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

if [ "${1:-}" = pack ]; then
  set -e
  bash ../shared/gpu/wheels.sh
  cache=$(mktemp -d)
  src=$("$PY" -c "import sys; from pipelines import models; print(models.prepare_default(sys.argv[1]))" "$cache" | tail -n 1)
  mkdir -p .whl/smollm2
  for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja \
           generation_config.json; do
    [ -f "$src/$f" ] && cp "$src/$f" .whl/smollm2/
  done
  rm -rf "$cache"
  du -sh .whl
  exit 0
fi

OUT=${OUT:-/tmp/gpu-checks-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu-checks.XXXXXX)
SUMMARY=$OUT/summary.txt
export STUDIO_HOME=$WORK/home TQDM_DISABLE=1 HF_HUB_OFFLINE=1
STUDIO=("$PY" -c "import sys; from studio.cli import main; sys.exit(main())")
if [ -n "${GPU_CHECKS_SMALL:-}" ]; then
  BIG=tiny; SMALL=tiny; ROWS=16; QROWS=16; TOKENS=16; SOURCE=${SOURCE:-.whl/smollm2}
else
  BIG=m1p7; SMALL=m135; ROWS=2000; QROWS=64; TOKENS=128; SOURCE=${SOURCE:-.whl/smollm2}
fi

# step NAME SECONDS COMMAND...: runs it under a limit, its output in $OUT/NAME.log, one line in the summary
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$SUMMARY"
  return $rc
}

{
  echo "# GPU checks $(date -u +%FT%TZ), $BIG / $SMALL shapes, $ROWS rows"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available(), '| transformers', transformers.__version__, 'trl', trl.__version__,
'peft', peft.__version__)"
  "$PY" -c "import inspect; from torch.nn.attention.varlen import varlen_attn; print('varlen_attn', inspect.signature(varlen_attn))" 2>&1 | tail -n 1
} 2>&1 | tee "$SUMMARY"

step models 90 "$PY" bench/gpu_models.py "$SOURCE" "$WORK" "$BIG" $([ "$SMALL" != "$BIG" ] && echo "$SMALL") \
  || { cat "$OUT/models.log"; exit 1; }

# 1. The target: the studio's LoRA SFT against TRL's best hand-tuned setting, bf16, with the peak share.
step sft_speed_big 240 "$PY" bench/sft_speed.py --model "$WORK/$BIG" --rows "$ROWS" --variants studio trl-best
grep -m 2 -i "varlen\|row by row" "$OUT/sft_speed_big.log" >> "$SUMMARY"
sed -n '/^  studio/,$p' "$OUT/sft_speed_big.log" >> "$SUMMARY"

# 2. Chat on the GPU: first token and tokens/s, base and tuned side on one copy.
step chat_speed 100 "$PY" bench/chat_speed.py --model "$WORK/$BIG" --home "$WORK/chat" --repeats 2 --tokens "$TOKENS"
grep -E "device|first token|throughput|both sides|:$" "$OUT/chat_speed.log" >> "$SUMMARY"

# 3. QLoRA through `studio train` (4-bit base, paged 8-bit AdamW on CUDA), then generate from that run.
head -n "$QROWS" assets/samples/quillpad_faq.jsonl > "$WORK/faq.jsonl"
cat > "$WORK/qlora.yaml" <<YAML
model: $WORK/$BIG
dataset: $WORK/faq.jsonl
method: qlora
params: {num_train_epochs: 1, per_device_train_batch_size: 8, eval_fraction: 0.0}
YAML
if step qlora 90 "${STUDIO[@]}" train "$WORK/qlora.yaml" --wait; then
  run_id=$(head -n 1 "$OUT/qlora.log")
  grep -E "loss|device|bf16|optim|4-bit|tokens/s" "$WORK/home/runs/$run_id/"*.log 2>/dev/null | tail -n 5 >> "$SUMMARY"
  step generate 60 "$PY" - "$run_id" <<'PY'
import sys, time
from studio.core import Studio
from studio import chat_service
from pipelines.chat import GenerationSettings, stream
studio = Studio(standby=False)
settings = GenerationSettings(temperature=0, max_new_tokens=32)
t0 = time.perf_counter()
(decoder,) = chat_service.decoders(studio, [f"run:{sys.argv[1]}"], [[{"role": "user", "content": "Hi"}]], settings)
for (text,) in stream([decoder]):
    pass
model = decoder.entry.model
print(f"generate from the QLoRA run: device {model.device}, dtype {model.dtype}, "
      f"{len(decoder.generated)} tokens in {time.perf_counter() - t0:.1f} s")
PY
  tail -n 1 "$OUT/generate.log" >> "$SUMMARY"
else
  tail -n 5 "$OUT/qlora.log" >> "$SUMMARY"
fi

# 3b. PPO (the studio's own loop) on the GPU: 16 arithmetic prompts, 2 steps; its log says where it ran.
head -n 16 assets/samples/arithmetic_prompts.jsonl > "$WORK/prompts.jsonl"
cat > "$WORK/ppo.yaml" <<YAML
model: $WORK/$SMALL
dataset: $WORK/prompts.jsonl
method: ppo
params: {num_train_epochs: 1, per_device_train_batch_size: 8, max_completion_length: 16}
rewards: [{name: number, weight: 1.0}]
YAML
if step ppo 60 "${STUDIO[@]}" train "$WORK/ppo.yaml" --wait; then
  ppo_id=$(head -n 1 "$OUT/ppo.log")
  grep -hE "loaded from|on cuda|on cpu" "$WORK/home/runs/$ppo_id/train.log" 2>/dev/null | tail -n 1 >> "$SUMMARY"
else
  tail -n 5 "$OUT/ppo.log" >> "$SUMMARY"
fi

# 4. The built-in model's shape, if time is left (the 2026-11-22 figures: studio 75 s, TRL 75-159 s).
if [ "$SMALL" != "$BIG" ]; then
  step sft_speed_small 150 "$PY" bench/sft_speed.py --model "$WORK/$SMALL" --rows "$ROWS" --variants studio trl-best
  sed -n '/^  studio/,$p' "$OUT/sft_speed_small.log" >> "$SUMMARY"
fi
echo "total $SECONDS s" | tee -a "$SUMMARY"
