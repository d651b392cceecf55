#!/usr/bin/env bash
# One-shot GPU check (issue 12): CUDA tests and the base-model numbers, in under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine: writes gpu_check.json + RESULTS.md rows
#   bash benchmarks/gpu_check.sh --dry-run       # on a CPU: tiny configs, small sizes, same plumbing
#
# Steps (each under its own timeout; a failed step is recorded in the JSON, the next one still runs):
#   tests     the CUDA-capable tests (pytest -k "cuda or gpu")
#   model     bench_model egovlp-base, bf16 (weights cast once) and fp32 on CUDA: clips/s, ratio to the same-dtype matmul peak, bf16/fp32, cos_min
#   extract   bench_extract egovlp-base on CUDA (bf16): x realtime, e2e / max(decode, model)
#   decode    bench_decode: PyAV / decord / torchcodec on the CPU, plus NVDEC (torchcodec on CUDA) when it loads
#   train     bench_train egovlp-base bf16: clips/s, MFU against the measured bf16 matmul peak
#   serve     bench_serve text only, base model: throughput and p50/p99
# Output: $OUT (default benchmarks/gpu_check.json) and rows appended to benchmarks/RESULTS.md.
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if [[ $DRY == 1 ]]; then OUT=${OUT:-${TMPDIR:-/tmp}/gpu_check.dry.json}; else OUT=${OUT:-benchmarks/gpu_check.json}; fi
RESULTS=${RESULTS:-benchmarks/RESULTS.md}
if [[ ! -x "$PY" ]]; then  # a fresh machine: the project's own install (make), then the check
  make -s .venv/.installed || { echo "gpu_check: cannot install the project (make)" >&2; exit 2; }
fi
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

if [[ $DRY == 1 ]]; then
  CONFIG=tiny; YAML=configs/model/tiny.yaml; DEVICE=cpu; BATCH=4; SCALE=small
else
  CONFIG=egovlp-base; YAML=configs/model/egovlp-base.yaml; DEVICE=cuda; BATCH=32; SCALE=full
fi

step() {  # step NAME SECONDS CMD...: run, keep stdout+stderr, record rc and seconds
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" >&2
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - t0))" >"$LOGS/$name.rc"
  tail -n 3 "$LOGS/$name.log" >&2
  echo "== $name: rc $rc in $((SECONDS - t0)) s" >&2
}

MODEL_DIR="$LOGS/model-$CONFIG"
step prepare 120 "$PY" -c "import egovlp; egovlp.create_model('$YAML').save_pretrained('$MODEL_DIR')"

if [[ $DRY == 1 ]]; then
  step tests 120 "$PY" -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests/extract
  step model 120 "$PY" benchmarks/bench_model.py --configs "$CONFIG" --batch 2 --repeats 1
  step extract 300 "$PY" benchmarks/bench_extract.py --config "$YAML" --device cpu --rounds 1
  step decode 300 "$PY" benchmarks/bench_decode.py --count 1 --seconds 6 --reads 50 --samples 5 --nvdec --out "$LOGS/decode.json"
  step train 120 "$PY" benchmarks/bench_train.py --configs "$CONFIG" --batch 2 --repeats 1
  step serve 120 "$PY" benchmarks/bench_serve.py --no-video --requests 20 --concurrency 1 8 --overload 16 --time-limit 10
else
  step tests 90 "$PY" -m pytest -q -p no:cacheprovider -rs -k "cuda or gpu" tests
  step model 60 "$PY" benchmarks/bench_model.py --configs "$CONFIG" --batch "$BATCH" --repeats 5 --threads 8 --skip-cpu
  step extract 150 "$PY" benchmarks/bench_extract.py --config "$YAML" --device cuda --batch-size 64 --workers 12 --rounds 2
  step decode 60 "$PY" benchmarks/bench_decode.py --count 2 --seconds 20 --reads 300 --samples 20 --nvdec --out "$LOGS/decode.json"
  step train 60 "$PY" benchmarks/bench_train.py --configs "$CONFIG" --batch "$BATCH" --repeats 3 --threads 8
  step serve 60 "$PY" benchmarks/bench_serve.py --model "$MODEL_DIR" --no-video --requests 400 --time-limit 15
fi

"$PY" - "$LOGS" "$OUT" "$RESULTS" "$CONFIG" "$DRY" <<'PYEOF'
"""Collect the steps' logs into one JSON and add RESULTS.md rows naming the GPU."""
import datetime, json, re, subprocess, sys
from pathlib import Path

logs, out, results, config, dry = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"


def gpu_name() -> str:
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        text = ""
    return text.splitlines()[0] if text else "no GPU (CPU dry run)" if dry else "unknown GPU"


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


report = {"date": datetime.date.today().isoformat(), "gpu": gpu_name(), "config": config, "dry_run": dry, "steps": {}}
for rc_file in sorted(logs.glob("*.rc")):
    name = rc_file.stem
    rc, seconds = (int(x) for x in rc_file.read_text().split())
    text = (logs / f"{name}.log").read_text(errors="replace")
    entry = {"rc": rc, "seconds": seconds, "ok": rc == 0, "tail": text.strip().splitlines()[-8:]}
    if name == "tests":
        m = re.search(r"(\d+) passed", text)
        entry["passed"] = int(m.group(1)) if m else 0
        m = re.search(r"(\d+) failed", text)
        entry["failed"] = int(m.group(1)) if m else 0
    elif name == "model":
        entry["rows"] = [
            {"run": f"{m.group(1)}/{m.group(2)}", "clips_per_s": float(m.group(3)), "ratio_to_matmul": float(m.group(4))}
            for m in re.finditer(r"\[(\S+)\]\s+" + re.escape(config) + r"\s+(\w+):\s+([\d.]+) clips/s.*= ([\d.]+) of the", text)
        ]
        summary = [line for line in text.splitlines() if line.startswith("{")]
        entry["summary"] = json.loads(summary[-1]) if summary else None
    elif name == "train":
        entry["rows"] = [
            {"run": m.group(1), "clips_per_s": float(m.group(2)), "mfu": float(m.group(3))}
            for m in re.finditer(r"\[(\S+)\]\s+" + re.escape(config) + r"\s+([\d.]+) clips/s.*MFU ([\d.]+)", text)
        ]
    elif name in ("extract", "serve"):
        entry["result"] = last_json(text)
    elif name == "decode" and (logs / "decode.json").is_file():
        entry["result"] = json.loads((logs / "decode.json").read_text())
    report["steps"][name] = entry
out.write_text(json.dumps(report, indent=1) + "\n")

s = report["steps"]
def get(name, *keys):
    value = s.get(name, {})
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else (value[k] if isinstance(value, list) and len(value) > k else None)
    return value

bf16 = next((r for r in get("model", "rows") or [] if r["run"].endswith("bf16")), None) or (get("model", "rows") or [None])[0]
train = (get("train", "rows") or [None])[0]
ex = get("extract", "result") or {}
serve = get("serve", "result") or {}
decode = {r["backend"]: r for r in (get("decode", "result") or {}).get("results", [])}
nvdec = decode.get("nvdec", {})
rows = [
    f"| {report['date']} | {report['gpu']} | tests | {get('tests', 'passed')} passed, {get('tests', 'failed')} failed (rc {get('tests', 'rc')}) |",
    f"| {report['date']} | {report['gpu']} | bench_model {config} | {bf16 and bf16['run']} {bf16 and bf16['clips_per_s']} clips/s, {bf16 and bf16['ratio_to_matmul']} of measured matmul peak (rc {get('model', 'rc')}) |",
    f"| {report['date']} | {report['gpu']} | bench_extract {config} | {ex.get('x_realtime')} x realtime, e2e/max {ex.get('e2e_over_max')} (rc {get('extract', 'rc')}) |",
    f"| {report['date']} | {report['gpu']} | NVDEC (torchcodec cuda) | {nvdec.get('window', {}).get('x_realtime', nvdec.get('error', 'not run'))} x realtime window reads (rc {get('decode', 'rc')}) |",
    f"| {report['date']} | {report['gpu']} | bench_train {config} | {train and train['run']} {train and train['clips_per_s']} clips/s, MFU {train and train['mfu']} (rc {get('train', 'rc')}) |",
    f"| {report['date']} | {report['gpu']} | bench_serve text | {json.dumps(serve)[:160]} (rc {get('serve', 'rc')}) |",
]
if not dry:
    with open(results, "a") as f:
        f.write(f"\n### GPU check {report['date']} ({report['gpu']}, `bash benchmarks/gpu_check.sh`)\n\n")
        f.write("| date | GPU | step | result |\n| --- | --- | --- | --- |\n")
        f.write("\n".join(rows) + "\n")
print("\n".join(rows))
print(f"wrote {out}" + ("" if dry else f" and rows in {results}"))
PYEOF
