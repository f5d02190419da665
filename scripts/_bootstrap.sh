# Sourced by scripts/miyabi and scripts/test: makes .venv with miyabi installed.
# Usage: bootstrap EXTRAS   (EXTRAS: "" or "test" or "test,bench")
# Re-installs when pyproject.toml or the extras change (stamp in .venv/.miyabi-stamp).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

_find_python() {
  local c v
  for c in ${MIYABI_PYTHON:-} python3.13 python3.12 python3.11 python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    v=$("$c" -c 'import sys; print(int(sys.version_info >= (3, 11)))' 2>/dev/null) || continue
    [ "$v" = 1 ] && { command -v "$c"; return 0; }
  done
  return 1
}

_apt_install() {
  # Installs Debian packages when we are root and apt-get exists; else says what to do.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "miyabi: installing $* with apt-get" >&2
    (apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null; }) || return 1
    return 0
  fi
  return 1
}

bootstrap() {
  local extras="$1" spec stamp py
  spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  stamp="$(cat "$ROOT/pyproject.toml" 2>/dev/null | cksum | cut -d' ' -f1)-$extras"
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.miyabi-stamp" ]; then
    # An installed superset of the extras is fine.
    local have; have="$(cat "$VENV/.miyabi-stamp")"
    case "$have" in
      "$stamp"|"${stamp%-*}-test,bench") return 0 ;;
      "${stamp%-*}-test") [ "$extras" = "" ] && return 0 ;;
    esac
  fi
  py="$(_find_python)" || {
    echo "miyabi: needs Python 3.11 or newer (python3.11+ not found on PATH); install it, or set MIYABI_PYTHON" >&2
    exit 1
  }
  echo "miyabi: setting up $VENV (first run; installs miyabi${extras:+ with $extras extras})..." >&2
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV" 2>/dev/null || {
      rm -rf "$VENV"
      _apt_install python3-venv && "$py" -m venv "$VENV"
    } || { echo "miyabi: could not create $VENV; install python3-venv" >&2; exit 1; }
  fi
  echo "miyabi: installing dependencies with pip (log: $VENV/install.log)..." >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$spec" >"$VENV/install.log" 2>&1 || {
    grep -v '^WARNING: Location' "$VENV/install.log" | tail -15 >&2
    echo "miyabi: pip could not install miyabi into $VENV (full log: $VENV/install.log)" >&2
    exit 1
  }
  echo "$stamp" > "$VENV/.miyabi-stamp"
  echo "miyabi: ready" >&2
}

ensure_tmux() {
  command -v tmux >/dev/null 2>&1 && return 0
  _apt_install tmux && command -v tmux >/dev/null 2>&1 && return 0
  return 1
}

ensure_redis() {
  # Debian's Redis server, for the bus tests (each test starts a private one on 127.0.0.1).
  command -v redis-server >/dev/null 2>&1 && return 0
  _apt_install redis-server && command -v redis-server >/dev/null 2>&1 && return 0
  return 1
}

ensure_bwrap() {
  # Debian's bubblewrap, for the sandbox tests (sandboxed agents run in it).
  command -v bwrap >/dev/null 2>&1 && return 0
  _apt_install bubblewrap && command -v bwrap >/dev/null 2>&1 && return 0
  return 1
}

ensure_chromium() {
  # Debian's headless Chromium and its ChromeDriver, for the dashboard's page tests.
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  _apt_install chromium chromium-driver && command -v chromedriver >/dev/null 2>&1 && return 0
  return 1
}

ensure_on_path() {
  # Makes sure the user can type `miyabi` as every example does, telling once (per
  # .venv, in one line on stderr) what it did: nothing when this checkout's miyabi is
  # already on PATH; a link ~/.local/bin/miyabi -> .venv/bin/miyabi when ~/.local/bin is
  # on PATH and holds no miyabi; else the line that puts .venv/bin on PATH.
  local told="$VENV/.miyabi-path" want="$VENV/bin/miyabi" have bin="${HOME:-}/.local/bin"
  [ -e "$told" ] && return 0
  have="$(command -v miyabi 2>/dev/null || true)"
  if [ -n "$have" ] && [ "$(readlink -f "$have")" = "$(readlink -f "$want")" ]; then
    :
  elif [ -z "$have" ] && [ -n "${HOME:-}" ] && case ":$PATH:" in *":$bin:"*) true ;; *) false ;; esac &&
    [ ! -e "$bin/miyabi" ] && [ ! -L "$bin/miyabi" ] && mkdir -p "$bin" && ln -s "$want" "$bin/miyabi"; then
    echo "miyabi: linked $bin/miyabi to $want: \`miyabi\` now works in any directory" >&2
  elif [ -n "$have" ]; then
    echo "miyabi: \`miyabi\` on your PATH is $have, not this checkout's; to use this one: export PATH=\"$VENV/bin:\$PATH\"" >&2
  else
    echo "miyabi: to type \`miyabi\` in any directory: export PATH=\"$VENV/bin:\$PATH\" (add it to ~/.bashrc to keep it)" >&2
  fi
  : >"$told" 2>/dev/null || true
}
