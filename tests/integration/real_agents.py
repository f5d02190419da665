"""The real agent CLIs (installed by scripts/test into ``$MIYABI_AGENT_CLIS``), each in a
throwaway HOME with its first-run dialogs answered, talking to the model stand-in
(tests/fakemodel.py) on 127.0.0.1.

Facts measured on the pinned versions (scripts/_agents.sh):
- Claude Code reads ``~/.claude.json``: ``hasCompletedOnboarding``, the last 20
  characters of the API key in ``customApiKeyResponses.approved``, and
  ``projects[<cwd>].hasTrustDialogAccepted``; it honours ``ANTHROPIC_BASE_URL``.
- Codex reads ``$CODEX_HOME/config.toml``: a ``[model_providers.X]`` with ``base_url``
  and ``wire_api = "responses"``, and ``[projects."<cwd>"] trust_level = "trusted"``.
- Gemini CLI reads ``~/.gemini/settings.json`` (``security.auth.selectedType:
  gemini-api-key``, ``security.folderTrust.enabled: false``) and honours
  ``GOOGLE_GEMINI_BASE_URL``.
- opencode reads the file ``OPENCODE_CONFIG`` names: a provider through
  ``@ai-sdk/openai-compatible`` with a ``baseURL``, and ``permission: {bash: ask}``
  (it asks nothing by default).
- aider takes ``--openai-api-base``; ``LITELLM_LOCAL_MODEL_COST_MAP`` keeps litellm
  from fetching its price list from the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

API_KEY = "sk-ant-api03-miyabi-tests-000000000000-abcdefghijklmnopqrst"


def clis() -> Path:
    """The agent CLI cache; fails the test (never skips) when it is missing."""
    d = os.environ.get("MIYABI_AGENT_CLIS")
    if not d or not Path(d).is_dir():
        pytest.fail(
            "MIYABI_AGENT_CLIS is not set or missing: run the tests with scripts/test, which installs the agent CLIs"
        )
    return Path(d)


def program(name: str) -> str:
    path = {
        "claude": clis() / "npm/node_modules/.bin/claude",
        "codex": clis() / "npm/node_modules/.bin/codex",
        "gemini": clis() / "npm/node_modules/.bin/gemini",
        "opencode": clis() / "npm/node_modules/.bin/opencode",
        "aider": clis() / "aider/bin/aider",
    }[name]
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: scripts/test installs {name}; run it (or see its install log)")
    return str(path)


@dataclass
class Setup:
    """One agent of a real CLI: its layout block and working directory."""

    profile: str
    work: Path
    command: str
    env: dict[str, str] = field(default_factory=dict)

    def agent(self, name: str) -> dict[str, object]:
        """The agent's entry in a layout (for ``helpers.write_layout``)."""
        return {
            "name": name,
            "profile": self.profile,
            "intro": False,
            "cwd": str(self.work),
            "command": self.command,
            "env": dict(self.env),
        }

    def block(self, name: str) -> str:
        """The agent's entry as YAML text, an item of a layout's ``agents:`` list."""
        text = yaml.safe_dump([self.agent(name)], default_flow_style=None, sort_keys=False, width=1 << 20)
        return textwrap.indent(text, "  ")


def setup(name: str, tmp: Path, model_url: str) -> Setup:
    """A throwaway HOME and working directory for CLI ``name``."""
    home = tmp / f"{name}-home"
    work = tmp / f"{name}-work"
    home.mkdir()
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    # CI=false: under CI=true (as CI runs) Ink-based CLIs (Gemini CLI) stop being interactive
    base = {"HOME": str(home), "TERM": "xterm-256color", "NO_COLOR": "1", "CI": "false"}
    if name == "claude":
        (home / ".claude.json").write_text(
            json.dumps(
                {
                    "hasCompletedOnboarding": True,
                    "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
                    "projects": {str(work): {"hasTrustDialogAccepted": True}},
                }
            )
        )
        env = {
            **base,
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_BASE_URL": model_url,
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        return Setup("claude", work, f"{program('claude')} --permission-mode default", env)
    if name == "codex":
        codex_home = home / ".codex"
        codex_home.mkdir()
        (codex_home / "config.toml").write_text(
            'model = "fake-model"\nmodel_provider = "fake"\napproval_policy = "on-request"\n'
            'sandbox_mode = "workspace-write"\ncheck_for_update_on_startup = false\n\n'
            f'[model_providers.fake]\nname = "fake"\nbase_url = "{model_url}/v1"\nwire_api = "responses"\n'
            f'env_key = "FAKE_API_KEY"\n\n[projects."{work}"]\ntrust_level = "trusted"\n'
        )
        env = {**base, "CODEX_HOME": str(codex_home), "FAKE_API_KEY": "x"}
        return Setup("codex", work, f"{program('codex')} --no-daemon", env)
    if name == "gemini":
        (home / ".gemini").mkdir()
        (home / ".gemini" / "settings.json").write_text(
            json.dumps(
                {
                    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
                    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                    "privacy": {"usageStatisticsEnabled": False},
                    "ui": {"hideTips": True},
                }
            )
        )
        env = {**base, "GEMINI_API_KEY": "fake-key", "GOOGLE_GEMINI_BASE_URL": model_url}
        return Setup("gemini", work, program("gemini"), env)
    if name == "opencode":
        config = home / "opencode.json"
        config.write_text(
            json.dumps(
                {
                    "provider": {
                        "fake": {
                            "npm": "@ai-sdk/openai-compatible",
                            "name": "Fake",
                            "options": {"baseURL": f"{model_url}/v1", "apiKey": "x"},
                            "models": {"fake-model": {"name": "Fake"}, "fake-small": {"name": "Small"}},
                        }
                    },
                    "model": "fake/fake-model",
                    "small_model": "fake/fake-small",
                    "autoupdate": False,
                    "share": "disabled",
                    "permission": {"bash": "ask", "edit": "ask"},
                }
            )
        )
        env = {**base, "OPENCODE_CONFIG": str(config), "OPENCODE_DISABLE_AUTOUPDATE": "1"}
        return Setup("opencode", work, program("opencode"), env)
    env = {**base, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = (
        f"{program('aider')} --no-auto-commits --no-check-update --no-show-release-notes --analytics-disable "
        "--no-show-model-warnings --no-gitignore --edit-format diff --model openai/fake-model --openai-api-base "
        f"{model_url}/v1 "
        "--openai-api-key x"
    )
    return Setup("aider", work, cmd, env)
