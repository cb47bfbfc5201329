#!/usr/bin/env bash
# One model replica split across 2 GPUs of one machine (tensor parallelism).
#
# The 0.8B model fits one GPU easily: tensor parallelism pays off for the 2B sibling
# (MODEL=h2oai/h2ovl-mississippi-2b) or to cut per-request latency on small GPUs. The attention
# head counts (16 in the vision encoder and the decoder) divide by 2 and 4.
set -euo pipefail
MODEL="${MODEL:-h2oai/h2ovl-mississippi-800m}"
: "${VLLM_API_KEY:?set VLLM_API_KEY}"
exec vllm serve "$MODEL" \
    --trust-remote-code \
    --tensor-parallel-size 2 \
    --host 0.0.0.0 --port 8000 \
    --api-key "$VLLM_API_KEY" \
    --max-model-len 8192 \
    --limit-mm-per-prompt '{"image": 4}' \
    "$@"
