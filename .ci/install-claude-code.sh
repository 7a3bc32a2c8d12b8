#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into the checkout's git-ignored .tools/claude-code folder
# (never globally) and prints the path of its `claude` executable on stdout; everything else goes to
# stderr. Idempotent: a second run with the same pinned version installs nothing.
#
#   LOOPD_CLAUDE_BIN="$(bash .ci/install-claude-code.sh)"
#
# Since 2.1.1xx the npm package is a thin wrapper whose postinstall copies a native binary from a
# platform package (@anthropic-ai/claude-code-linux-x64, ...) over bin/claude.exe, so node is only
# needed by npm itself (the package asks for node >= 22, npm only warns under node 20). The binary
# works offline against a local ANTHROPIC_BASE_URL. Bump the version deliberately: the stream-json
# samples under tests/fixtures/claude-code/ were recorded with this one.
set -euo pipefail

CLAUDE_CODE_VERSION="${LOOPD_CLAUDE_CODE_VERSION:-2.1.332}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.tools/claude-code"
pkg="$prefix/node_modules/@anthropic-ai/claude-code"
bin="$prefix/node_modules/.bin/claude"

installed_version() {
    # `claude --version` prints "2.1.332 (Claude Code)"; a fresh temporary HOME keeps it from
    # touching the user's ~/.claude.
    local home
    home="$(mktemp -d)"
    HOME="$home" DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 \
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        timeout 60 "$1" --version 2>/dev/null </dev/null | awk '{print $1; exit}' || true
    rm -rf "$home"
}

if [[ -x "$bin" && "$(installed_version "$bin")" == "$CLAUDE_CODE_VERSION" ]]; then
    echo "claude-code $CLAUDE_CODE_VERSION already installed" >&2
    echo "$bin"
    exit 0
fi

command -v npm >/dev/null || { echo "install-claude-code: npm not found" >&2; exit 1; }
mkdir -p "$prefix"
echo "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $prefix" >&2
npm install --prefix "$prefix" --no-audit --no-fund --no-update-notifier --loglevel=error \
    --save-exact "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2

# npm versions that hold back install scripts leave bin/claude.exe as a placeholder stub: run the
# package's own postinstall, which copies the platform binary in place.
if [[ "$(installed_version "$bin")" != "$CLAUDE_CODE_VERSION" && -f "$pkg/install.cjs" ]]; then
    echo "running the package's postinstall by hand" >&2
    (cd "$pkg" && node install.cjs >&2)
fi

if [[ "$(installed_version "$bin")" != "$CLAUDE_CODE_VERSION" ]]; then
    # Last resort: the platform package's binary itself.
    for native in "$prefix"/node_modules/@anthropic-ai/claude-code-linux-*/claude; do
        if [[ -x "$native" && "$(installed_version "$native")" == "$CLAUDE_CODE_VERSION" ]]; then
            echo "$native"
            exit 0
        fi
    done
    echo "install-claude-code: $bin does not report version $CLAUDE_CODE_VERSION" >&2
    exit 1
fi
echo "$bin"
