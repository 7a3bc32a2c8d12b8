#!/usr/bin/env bash
# A scripted stand-in for a coding agent, so this fleet runs offline with no API key.
#
# loopd runs it in the loop's workdir, with no stdin, in its own process group, and with:
#   LOOPD_PROMPT_FILE  the rendered prompt (prompt.md with the placeholders filled in)
#   LOOPD_RESULT_FILE  where an agent may write {"cost_usd", "input_tokens", "output_tokens", "summary"}
#   LOOPD_LOOP, LOOPD_TEST_ID, LOOPD_ATTEMPT
#
# Replace it with a real agent: a script that hands "$LOOPD_PROMPT_FILE" to your tool, or
# `kind = "claude-code"` in loopd.toml.
set -euo pipefail

echo "attempt ${LOOPD_ATTEMPT:-?} of test ${LOOPD_TEST_ID:-?} in loop ${LOOPD_LOOP:-?}"
case "${LOOPD_TEST_ID:-}" in
  hello-file) touch hello.txt ;;
  hello-greeting) echo 'Hello, world!' > hello.txt ;;
  *) echo "this scripted agent does not know test ${LOOPD_TEST_ID:-}" >&2; exit 1 ;;
esac

if [ -n "${LOOPD_RESULT_FILE:-}" ]; then
  printf '{"cost_usd": 0, "summary": "scripted change for %s"}\n' "$LOOPD_TEST_ID" > "$LOOPD_RESULT_FILE"
fi
