#!/usr/bin/env bash
# Two full replicas on 2 GPUs behind one endpoint (data parallelism): twice the throughput for a
# small model like this one. vLLM balances requests between the replicas itself.
#
# Combine with tensor parallelism as --data-parallel-size 2 --tensor-parallel-size 2 (4 GPUs).
set -euo pipefail
MODEL="${MODEL:-h2oai/h2ovl-mississippi-800m}"
: "${VLLM_API_KEY:?set VLLM_API_KEY}"
exec vllm serve "$MODEL" \
    --trust-remote-code \
    --data-parallel-size 2 \
    --host 0.0.0.0 --port 8000 \
    --api-key "$VLLM_API_KEY" \
    --max-model-len 8192 \
    --limit-mm-per-prompt '{"image": 4}' \
    "$@"
