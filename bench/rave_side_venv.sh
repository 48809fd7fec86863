#!/usr/bin/env bash
# Side venv with acids-rave, for timing RAVE v2 next to mcrave in bench/model_bench.py only.
# RAVE is CC BY-NC: it is never a project dependency and none of its code enters mcrave.
#   bash bench/rave_side_venv.sh [VENV]   then   python bench/model_bench.py --rave-python VENV/bin/python
set -euo pipefail
venv="${1:-bench/results/rave-venv}"
python3 -m venv --system-site-packages "$venv"   # reuses the installed torch 2.13 CPU wheel
pip="$venv/bin/pip"
"$pip" install -q --no-deps acids-rave cached-conv nn-tilde
"$pip" install -q gin-config einops absl-py GPUtil "pytorch-lightning==1.9.0" scikit-learn librosa lmdb \
  "scipy==1.10.1" "numpy<2" "torch==2.13.0"
"$pip" install -q --force-reinstall --no-deps "setuptools==69.5.1"  # RAVE imports pkg_resources
# torchaudio has no build for torch 2.13; RAVE only needs its Spectrogram class at import time
site="$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
mkdir -p "$site/torchaudio"
echo "from . import transforms  # bench-only stand-in" > "$site/torchaudio/__init__.py"
cat > "$site/torchaudio/transforms.py" <<'PY'
import torch


class Spectrogram(torch.nn.Module):
    """Minimal magnitude spectrogram (bench-only stand-in for torchaudio's)."""

    def __init__(self, n_fft=400, win_length=None, hop_length=None, window_fn=torch.hann_window, power=2.0,
                 center=True, **_):
        super().__init__()
        self.n_fft, self.hop, self.power, self.center = n_fft, hop_length or n_fft // 4, power, center
        self.register_buffer("window", window_fn(win_length or n_fft))

    def forward(self, x):
        shape = x.shape
        s = torch.stft(x.reshape(-1, shape[-1]), self.n_fft, self.hop, window=self.window, center=self.center,
                       return_complex=True).abs()
        s = s**self.power if self.power is not None else s
        return s.reshape(*shape[:-1], *s.shape[-2:])
PY
"$venv/bin/python" -c "import rave, cached_conv; print('acids-rave ready in $venv')"
