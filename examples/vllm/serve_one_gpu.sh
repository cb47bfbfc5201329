#!/usr/bin/env bash
# H2OVL-Mississippi-800M on one GPU with vLLM, ready for MississippiVLM.connect.
#
#   bash examples/vllm/serve_one_gpu.sh            # then: python examples/vllm/tasks.py page.png
#
# --trust-remote-code  the checkpoint's config class lives in its repository
# --limit-mm-per-prompt  images per request (JSON in current vLLM; older versions: image=4)
# --structured-outputs-config.backend  the grammar engine behind response_format json_schema
#                       (older versions: --guided-decoding-backend xgrammar).
#                       Structured outputs are on by default; this only pins the backend.
# --max-model-len      6 tiles + thumbnail = 1792 image tokens per image; 8192 leaves room
# --api-key            clients send "Authorization: Bearer $VLLM_API_KEY"
set -euo pipefail
MODEL="${MODEL:-h2oai/h2ovl-mississippi-800m}"
: "${VLLM_API_KEY:=$(openssl rand -hex 16)}"
echo "API key: $VLLM_API_KEY" >&2
exec vllm serve "$MODEL" \
    --trust-remote-code \
    --host 127.0.0.1 --port 8000 \
    --api-key "$VLLM_API_KEY" \
    --max-model-len 8192 \
    --limit-mm-per-prompt '{"image": 4}' \
    --structured-outputs-config.backend xgrammar \
    "$@"
