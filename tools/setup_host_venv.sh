#!/usr/bin/env bash
# Build ONE venv for ONE ComfyUI host checkout and Vista's tests (CPU).
# Usage: tools/setup_host_venv.sh VENV_DIR COMFYUI_PATH
# One venv per host: the supported hosts pin different frontend, template and transformers versions, so a
# shared venv would silently test one host with the other's packages.
# Pins torch==2.13.0 (the CPU build on disk) and torchvision==0.28.0 / torchaudio==2.11.0 --no-deps, and
# installs the host's requirements constrained to those three (an unpinned torch would pull a CUDA build).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 VENV_DIR COMFYUI_PATH" >&2; exit 2; }
venv=$1; host=$2
[ -f "$host/requirements.txt" ] || { echo "$host is not a ComfyUI checkout (no requirements.txt)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q --no-deps torchvision==0.28.0 torchaudio==2.11.0
cons=$(mktemp); printf 'torch==2.13.0\ntorchvision==0.28.0\ntorchaudio==2.11.0\n' > "$cons"
grep -vE '^(torch|torchvision|torchaudio)\s*$' "$host/requirements.txt" > "$cons.req"
"$py" -m pip install -q -c "$cons" -r "$cons.req"
"$py" -m pip install -q -c "$cons" -r "$here/../requirements.txt" -r "$here/../tests/requirements.txt"
# The browser tier (tests/browser) drives Debian's chromium through Playwright; never `playwright install`.
# requests: ComfyUI v0.3.64's server imports it at start (app/frontend_management.py) but its requirements.txt
# does not list it.
"$py" -m pip install -q -c "$cons" playwright requests
rm -f "$cons" "$cons.req"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# PyPI's torchvision is a CUDA build: guard the register_fake decorators of its meta registrations.
"$py" - "$site/torchvision/_meta_registrations.py" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
if "VISTA_GUARD" not in s:
    s = s.replace("@torch.library.register_fake", "@_vista_guarded_register_fake")
    s = s.replace("import torch\n", "import torch\n\ndef _vista_guarded_register_fake(name):  # VISTA_GUARD\n"
                  "    def deco(fn):\n        try:\n            return torch.library.register_fake(name)(fn)\n"
                  "        except RuntimeError:\n            return fn\n    return deco\n", 1)
    open(p, "w").write(s)
PY
# torchaudio's CUDA extension libraries cannot load here: move them away.
if ls "$site"/torchaudio/lib/*.so >/dev/null 2>&1; then
  mkdir -p "$site/torchaudio/lib_disabled" && mv "$site"/torchaudio/lib/*.so "$site/torchaudio/lib_disabled/"
fi
"$py" -c 'import torch, torchvision, torchaudio; print("host venv ok", torch.__version__, torchvision.__version__, torchaudio.__version__)'
