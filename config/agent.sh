#!/usr/bin/env bash
# Example command agent: hands the rendered prompt to a coding tool of your choice.
set -euo pipefail
echo "loop ${LOOPD_LOOP} test ${LOOPD_TEST_ID} attempt ${LOOPD_ATTEMPT}"
exec my-coding-agent --prompt-file "$LOOPD_PROMPT_FILE" "$@"
