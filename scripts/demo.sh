#!/usr/bin/env bash
# The mcrave demo: encoder and decoder services on localhost, a stereo file streamed through them with
# only the RIGHT channel present, the LEFT one inferred by the model. Run after `bash scripts/setup.sh`.
#   bash scripts/demo.sh [IN.wav] [OUT.wav]
# Without IN, a stereo example is synthesised. Services stop (SIGTERM, drained) when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/mcrave-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. the model: the shipped demo model, or a clearly labelled untrained stand-in in a temp registry
if [ -f models/demo-stereo/manifest.json ] || ls -d models/demo-stereo/[0-9]* >/dev/null 2>&1; then
  registry=models
  model=demo-stereo
else
  registry="$work/models"
  model=untrained-demo
  echo "NOTE: models/demo-stereo is not shipped yet: using an UNTRAINED stereo model" \
       "(its 'inferred' left channel is noise-like, not a trained prediction)."
  mcrave new --config test --channels 2 -o "$work/untrained.ckpt" >/dev/null
  python3 -c "import sys; from mcrave.registry import publish_version as p; \
p(sys.argv[1], sys.argv[2], sys.argv[3], info={'note': 'untrained demo stand-in'})" \
    "$registry" "$model" "$work/untrained.ckpt"
fi
rate=$(python3 -c "import sys; from mcrave.checkpoint import load_model; \
print(load_model(sys.argv[1])[0].sample_rate)" "$registry/$model")

# 2. the input: the caller's stereo file, or 4 s of a synthesised stereo example
input=${1:-$work/example-stereo.wav}
output=${2:-demo-inferred.wav}
if [ $# -lt 1 ]; then
  python3 - "$input" "$rate" <<'PY'
import sys
import numpy as np
import soundfile as sf
path, sr = sys.argv[1], int(sys.argv[2])
t = np.arange(4 * sr) / sr
env = 0.5 * (1 + np.sin(2 * np.pi * 0.5 * t))  # slow tremolo, panned differently per side
tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((220.0, 330.0, 440.0)))
left, right = 0.3 * tone * env, 0.3 * tone * (1 - 0.6 * env)
sf.write(path, np.stack([left, right], 1).astype(np.float32), sr, subtype="FLOAT")
PY
  echo "example input: $input (4 s stereo, synthesised)"
fi

# 3. encoder and decoder services on free localhost ports, each with its own metrics port
read -r enc_port dec_port enc_metrics dec_metrics < <(python3 -c "
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks: s.close()")
mcrave serve encoder --models "$registry" --host 127.0.0.1 --port "$enc_port" \
  --metrics-port "$enc_metrics" >"$work/encoder.log" 2>&1 &
pids+=($!)
mcrave serve decoder --models "$registry" --host 127.0.0.1 --port "$dec_port" \
  --metrics-port "$dec_metrics" >"$work/decoder.log" 2>&1 &
pids+=($!)
echo "starting encoder on 127.0.0.1:$enc_port and decoder on 127.0.0.1:$dec_port ..."
for _ in $(seq 120); do
  for i in 0 1; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      name=$([ "$i" = 0 ] && echo encoder || echo decoder)
      echo "the $name service exited during start-up; its log:" >&2
      cat "$work/$name.log" >&2
      exit 1
    fi
  done
  if mcrave-client models --server "127.0.0.1:$enc_port" >/dev/null 2>&1 &&
     mcrave-client models --server "127.0.0.1:$dec_port" >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done
mcrave-client models --server "127.0.0.1:$enc_port"

# 4. stream it: only channel 1 (right) travels to the encoder; the decoder returns both channels
mcrave-client infer "$input" "$output" --present 1 --model "$model" \
  --encoder "127.0.0.1:$enc_port" --decoder "127.0.0.1:$dec_port"

echo "Prometheus metrics: encoder http://127.0.0.1:$enc_metrics/metrics," \
     "decoder http://127.0.0.1:$dec_metrics/metrics"
python3 - "$enc_metrics" "$dec_metrics" <<'PY'
import sys
import urllib.request
for name, port in zip(("encoder", "decoder"), sys.argv[1:]):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = [l for l in text.splitlines() if "audio_seconds" in l and not l.startswith("#")]
    print(f"  {name}: " + ("; ".join(lines[:2]) or "(no audio-seconds counter found)"))
PY
echo "inferred stereo file: $output"
