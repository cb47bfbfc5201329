#!/usr/bin/env bash
# Serve HuggingFaceM4/Idefics3-8B-Llama3 with vLLM (native Idefics3ForConditionalGeneration; no
# remote code) on one GPU with >= 24 GB, for examples/vllm/idefics3.py.
#
# --mm-processor-kwargs sets the server's default image size: longest_edge must be a multiple of
# the 364-px tile (4 x 364 = 1456 as published; 3 x 364 = 1092 needs less memory). Requests can
# override it per call (MississippiVLM's longest_edge option -> mm_processor_kwargs.size).
set -euo pipefail
: "${VLLM_API_KEY:?export VLLM_API_KEY=... first}"
exec vllm serve HuggingFaceM4/Idefics3-8B-Llama3 \
    --host 127.0.0.1 --port 8000 --api-key "$VLLM_API_KEY" \
    --dtype bfloat16 --max-model-len 8192 \
    --limit-mm-per-prompt '{"image": 2}' \
    --mm-processor-kwargs '{"size": {"longest_edge": 1456}}'
