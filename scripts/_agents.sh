# Sourced by scripts/test: installs the real agent CLIs the tests drive (pinned
# versions) into a cache outside the repository, reused between runs:
#   $MIYABI_AGENT_CLIS (default ~/.cache/miyabi/agent-clis)/npm: Claude Code, Codex CLI, Gemini CLI,
#   opencode
#   $MIYABI_AGENT_CLIS/aider: a virtualenv with aider
# Exports MIYABI_AGENT_CLIS. A package that cannot be installed fails the run with one
# line naming it.

CLAUDE_CODE_VERSION=2.1.332
CODEX_VERSION=0.171.0
GEMINI_CLI_VERSION=0.61.0
OPENCODE_VERSION=1.18.33
AIDER_VERSION=0.86.2

ensure_agent_clis() {
  local dir="${MIYABI_AGENT_CLIS:-${XDG_CACHE_HOME:-$HOME/.cache}/miyabi/agent-clis}" want have log py
  mkdir -p "$dir"
  export MIYABI_AGENT_CLIS="$dir"
  log="$dir/install.log"
  want="claude-code@$CLAUDE_CODE_VERSION codex@$CODEX_VERSION gemini-cli@$GEMINI_CLI_VERSION opencode@$OPENCODE_VERSION"
  have="$(cat "$dir/npm/.miyabi-stamp" 2>/dev/null || true)"
  if [ "$have" != "$want" ] || [ ! -x "$dir/npm/node_modules/.bin/claude" ] || [ ! -x "$dir/npm/node_modules/.bin/codex" ] || [ ! -x "$dir/npm/node_modules/.bin/gemini" ] \
      || [ ! -x "$dir/npm/node_modules/.bin/opencode" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      _apt_install nodejs npm || true
    fi
    command -v npm >/dev/null 2>&1 || { echo "miyabi: the agent tests need npm for Claude Code and Codex CLI; install Node.js and npm" >&2; exit 1; }
    echo "miyabi: installing Claude Code $CLAUDE_CODE_VERSION, Codex CLI $CODEX_VERSION, Gemini CLI $GEMINI_CLI_VERSION and opencode $OPENCODE_VERSION from npm into $dir/npm ..." >&2
    npm install --prefix "$dir/npm" --no-audit --no-fund --loglevel=error \
      "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" "@openai/codex@$CODEX_VERSION" "@google/gemini-cli@$GEMINI_CLI_VERSION" \
      "opencode-ai@$OPENCODE_VERSION" >"$log" 2>&1 \
      || { echo "miyabi: npm could not install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION, @openai/codex@$CODEX_VERSION, @google/gemini-cli@$GEMINI_CLI_VERSION and opencode-ai@$OPENCODE_VERSION (log: $log)" >&2; exit 1; }
    "$dir/npm/node_modules/.bin/claude" --version >>"$log" 2>&1 \
      || { echo "miyabi: @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION installed but 'claude --version' fails (log: $log)" >&2; exit 1; }
    "$dir/npm/node_modules/.bin/codex" --version >>"$log" 2>&1 \
      || { echo "miyabi: @openai/codex@$CODEX_VERSION installed but 'codex --version' fails (log: $log)" >&2; exit 1; }
    "$dir/npm/node_modules/.bin/gemini" --version >>"$log" 2>&1 \
      || { echo "miyabi: @google/gemini-cli@$GEMINI_CLI_VERSION installed but 'gemini --version' fails (log: $log)" >&2; exit 1; }
    "$dir/npm/node_modules/.bin/opencode" --version >>"$log" 2>&1 \
      || { echo "miyabi: opencode-ai@$OPENCODE_VERSION installed but 'opencode --version' fails (log: $log)" >&2; exit 1; }
    echo "$want" > "$dir/npm/.miyabi-stamp"
  fi
  have="$(cat "$dir/aider/.miyabi-stamp" 2>/dev/null || true)"
  if [ "$have" != "aider-chat==$AIDER_VERSION" ] || [ ! -x "$dir/aider/bin/aider" ]; then
    py=""
    for c in python3.12 python3.11 python3; do
      "$c" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] < (3, 13))' >/dev/null 2>&1 && { py="$c"; break; }
    done
    [ -n "$py" ] || { echo "miyabi: aider $AIDER_VERSION needs Python 3.10 to 3.12 (none of python3.12, python3.11, python3 on PATH is)" >&2; exit 1; }
    echo "miyabi: installing aider-chat $AIDER_VERSION from PyPI into $dir/aider ..." >&2
    rm -rf "$dir/aider"
    { "$py" -m venv "$dir/aider" && "$dir/aider/bin/pip" install --disable-pip-version-check -q "aider-chat==$AIDER_VERSION"; } >"$log" 2>&1 \
      || { echo "miyabi: pip could not install aider-chat==$AIDER_VERSION (log: $log)" >&2; exit 1; }
    echo "aider-chat==$AIDER_VERSION" > "$dir/aider/.miyabi-stamp"
  fi
}
