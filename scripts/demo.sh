#!/usr/bin/env bash
# The mcrave demo: encoder and decoder services on localhost, a stereo file streamed through them with
# only the RIGHT channel present, the LEFT one inferred by the model. Run after `bash scripts/setup.sh`.
#   bash scripts/demo.sh [IN.wav] [OUT.wav]
# Without IN (or with IN=""), a stereo example is synthesised; OUT defaults to
# ./mcrave-demo-inferred.wav. The services stop (SIGTERM, drained) when the demo ends.
set -euo pipefail
here=$PWD
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
latest=$(ls models/demo-stereo 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
if [ -n "$latest" ]; then
  # a registry of just the latest demo-stereo version: the services load every version they
  # find, and the demo needs one (linked, not copied)
  registry="$work/models"
  model=demo-stereo
  mkdir -p "$registry/$model"
  ln -s "$PWD/models/$model/$latest" "$registry/$model/$latest"
  echo "NOTE: models/demo-stereo is a demo model trained ~1 h on a 2-core CPU (models/README.md):" \
       "the left channel is built by the decoder's spatial stage from the right channel's audio;" \
       "the latent-only left channel (step 5) is a blurry codec output."
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
abs() { case "$1" in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
input=$(abs "${1:-$work/example-stereo.wav}")
output=$(abs "${2:-mcrave-demo-inferred.wav}")
if [ -z "${1:-}" ]; then
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

# 3. encoder and decoder services on free localhost ports; each writes its bound ports when ready
for svc in encoder decoder; do
  mcrave serve "$svc" --models "$registry" --host 127.0.0.1 --port 0 --metrics-port 0 \
    --ready-file "$work/$svc.json" >"$work/$svc.log" 2>&1 &
  pids+=($!)
done
echo "starting the encoder and decoder services ..."
for _ in $(seq 240); do
  [ -f "$work/encoder.json" ] && [ -f "$work/decoder.json" ] && break
  for i in 0 1; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      svc=$([ "$i" = 0 ] && echo encoder || echo decoder)
      echo "the $svc service exited during start-up; its log:" >&2
      cat "$work/$svc.log" >&2
      exit 1
    fi
  done
  sleep 0.25
done
port() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
encoder="127.0.0.1:$(port "$work/encoder.json" port)"
decoder="127.0.0.1:$(port "$work/decoder.json" port)"
enc_metrics=$(port "$work/encoder.json" metrics_port)
dec_metrics=$(port "$work/decoder.json" metrics_port)
echo "encoder on $encoder, decoder on $decoder, serving:"
mcrave-client models --server "$encoder"

# 4. stream it: only channel R (right) travels to the encoder, and with the latents to the decoder
#    (its spatial stage builds the left channel from it); the decoder returns both channels
mcrave-client infer "$input" "$output" --present R --model "$model" \
  --encoder "$encoder" --decoder "$decoder"

echo "Prometheus metrics: encoder http://127.0.0.1:$enc_metrics/metrics," \
     "decoder http://127.0.0.1:$dec_metrics/metrics"
python3 - "$enc_metrics" "$dec_metrics" <<'PY'
import sys
import urllib.request
for name, port in zip(("encoder", "decoder"), sys.argv[1:]):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    keys = ("_audio_in_seconds_total", "_audio_out_seconds_total")
    lines = [l for l in text.splitlines() if any(k in l for k in keys) and l[0] != "#"]
    print(f"  {name}: " + ("; ".join(lines) or "(no audio-seconds counters found)"))
PY
echo "inferred stereo file (spatial stage: the right channel's audio reached the decoder): $output"

# 5. for comparison: the decoder from the latents alone (no audio beside them)
latent_out="${output%.wav}-latent-only.wav"
mcrave-client infer "$input" "$latent_out" --present R --model "$model" --latent-only --quiet \
  --encoder "$encoder" --decoder "$decoder"
echo "inferred stereo file (latent-only decoder, for comparison): $latent_out"
