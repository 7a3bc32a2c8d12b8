#!/usr/bin/env bash
# The demo's scripted coding agent. loopd runs it in the loop's workdir with the rendered prompt
# in $LOOPD_PROMPT_FILE; it "solves" each test by writing a file, prints what it does like a real
# agent would, and reports a made-up cost in $LOOPD_RESULT_FILE.
# CALC-2 is solved wrongly on the first attempt, to show a retry whose prompt carries the failure.
set -euo pipefail
say() { echo "[demo-agent] $*"; sleep 0.2; }

say "attempt $LOOPD_ATTEMPT at $LOOPD_TEST_ID ($(wc -l < "$LOOPD_PROMPT_FILE") prompt lines)"
if grep -q "Earlier attempts" "$LOOPD_PROMPT_FILE"; then
  say "the prompt says an earlier attempt failed; reading verify's output and trying again"
fi
case "$LOOPD_TEST_ID" in
  CALC-1) say "writing add.sh"; printf 'echo $(( $1 + $2 ))\n' > add.sh ;;
  CALC-2)
    if [ "$LOOPD_ATTEMPT" = 1 ]; then
      say "writing mul.sh"; printf 'echo $(( $1 + $2 ))\n' > mul.sh   # the classic copy-paste slip
    else
      say "fixing mul.sh"; printf 'echo $(( $1 * $2 ))\n' > mul.sh
    fi ;;
  CALC-3) say "writing calc.sh"; printf 'op=$1; shift; bash "$op.sh" "$@"\n' > calc.sh ;;
  GREET-1) say "writing greet.sh"; printf 'echo "Hello, $1!"\n' > greet.sh ;;
  GREET-2) say "adding a default"; printf 'echo "Hello, ${1:-world}!"\n' > greet.sh ;;
  *) say "I do not know how to do $LOOPD_TEST_ID"; exit 1 ;;
esac
say "done"
printf '{"cost_usd": 0.0125, "input_tokens": 1800, "output_tokens": 240, "summary": "wrote the files for %s"}\n' \
  "$LOOPD_TEST_ID" > "$LOOPD_RESULT_FILE"
