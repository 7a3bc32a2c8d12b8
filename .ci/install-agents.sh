#!/usr/bin/env bash
# Installs pinned agent CLIs (npm) into the checkout's git-ignored .tools/<name>/ folder (never
# globally) and prints the path of each one's executable on stdout, one a line, in the order asked;
# everything else goes to stderr. Idempotent: a CLI already at its pinned version is not
# reinstalled.
#
#   LOOPD_CODEX_BIN="$(bash .ci/install-agents.sh codex)"
#
# One entry per CLI in `pinned` below: name, npm package, version, the executable under
# node_modules/.bin. Bump a version deliberately: the fixtures under tests/fixtures/<name>/ and the
# event shapes in actors/src/agent/<name>.rs were checked against that one.
set -euo pipefail

# name|package|version|bin
pinned() {
    cat <<'EOF'
codex|@openai/codex|0.171.0|codex
EOF
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The version an installed CLI reports (its first word that looks like a version), from a fresh
# temporary HOME so that it touches no user's settings.
installed_version() {
    local home out
    home="$(mktemp -d)"
    out="$(HOME="$home" CODEX_HOME="$home" NO_UPDATE_NOTIFIER=1 \
        timeout 60 "$1" --version 2>/dev/null </dev/null || true)"
    rm -rf "$home"
    grep -oE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$out" | head -n1 || true
}

install_one() {
    local want="$1" line name package version binname
    line="$(pinned | awk -F'|' -v n="$want" '$1 == n')"
    if [[ -z "$line" ]]; then
        echo "install-agents: unknown CLI \`$want\` (known: $(pinned | cut -d'|' -f1 | tr '\n' ' '))" >&2
        return 1
    fi
    IFS='|' read -r name package version binname <<<"$line"
    version="$(v="LOOPD_${name^^}_VERSION"; echo "${!v:-$version}")"
    local prefix="$root/.tools/$name"
    local bin="$prefix/node_modules/.bin/$binname"
    if [[ -x "$bin" && "$(installed_version "$bin")" == "$version" ]]; then
        echo "$name $version already installed" >&2
        echo "$bin"
        return 0
    fi
    command -v npm >/dev/null || { echo "install-agents: npm not found" >&2; return 1; }
    mkdir -p "$prefix"
    echo "installing $package@$version into $prefix" >&2
    npm install --prefix "$prefix" --no-audit --no-fund --no-update-notifier --loglevel=error \
        --save-exact "$package@$version" >&2
    if [[ "$(installed_version "$bin")" != "$version" ]]; then
        echo "install-agents: $bin does not report version $version" >&2
        return 1
    fi
    echo "$bin"
}

if [[ $# -eq 0 ]]; then
    set -- $(pinned | cut -d'|' -f1)
fi
for name in "$@"; do
    install_one "$name"
done
