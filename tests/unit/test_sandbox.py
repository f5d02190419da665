"""The sandbox's pure part: which settings an agent inherits (layout → pool → agent), and
the command lines miyabi builds for bubblewrap, Docker and Podman."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from helpers import write_layout

from miyabi.agents.profiles import BUILTIN
from miyabi.config import load, sandbox
from miyabi.config.model import Agent
from miyabi.config.settings import SandboxEngine, SandboxNetwork, SandboxSettings


def test_members_inherit_the_layouts_sandbox_and_may_leave_it(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lay = load(
        write_layout(
            tmp_path / "l.yaml",
            [
                {"name": "a", "profile": "shell", "cwd": str(tmp_path / "a")},
                {"name": "b", "profile": "shell", "cwd": str(tmp_path / "b"), "sandbox": {"network": "none"}},
                {"name": "c", "profile": "shell", "sandbox": False},
            ],
            sandbox={"env": ["FOO"], "binds": ["/opt/x"]},
            pools=[
                {"name": "p", "profile": "shell", "repo": str(tmp_path), "sandbox": {"engine": "podman", "image": "i"}}
            ],
        )
    )
    a, b, c = lay.agents
    assert a.sandbox is not None and a.sandbox.network == SandboxNetwork.HOST and a.sandbox.env == ("FOO",)
    assert a.sandbox.hide == (str(tmp_path / "b"),)  # the other agents' working directories
    assert b.sandbox is not None and b.sandbox.network == SandboxNetwork.NONE and b.sandbox.binds == ("/opt/x",)
    assert b.sandbox.hide == (str(tmp_path / "a"),)
    assert c.sandbox is None
    pool = lay.pools[0].sandbox
    assert pool is not None and pool.engine == SandboxEngine.PODMAN and pool.image == "i" and pool.env == ("FOO",)


def box(tmp_path: Path, **settings: object) -> sandbox.Box:
    home_root, work, user = tmp_path / "home", tmp_path / "work", tmp_path / "user"
    for d in (home_root, work, user):
        d.mkdir(exist_ok=True)
    agent = Agent(name="a1", profile=BUILTIN["claude"], command="claude")
    s = SandboxSettings(**settings)  # type: ignore[arg-type]
    env = {"MIYABI_AGENT": "a1", "FOO": "bar baz"}
    return sandbox.plan(agent, s, env, home_root, work, user_home=user)


def options(words: list[str]) -> list[tuple[str, ...]]:
    """bwrap's words as (option, its arguments) tuples."""
    arity = {"--ro-bind": 2, "--bind": 2, "--tmpfs": 1, "--dev": 1, "--proc": 1, "--chdir": 1, "--setenv": 2}
    out, i = [], 1
    while i < len(words):
        n = arity.get(words[i], 0)
        out.append(tuple(words[i : i + 1 + n]))
        i += 1 + n
    return out


def test_bwrap_hides_the_homes_and_tmp_and_shows_the_work_and_the_channel(tmp_path: Path) -> None:
    b = box(tmp_path)
    opts = options(sandbox.bwrap_words(b))
    assert opts[0] == ("--ro-bind", "/", "/")
    assert ("--tmpfs", "/tmp") in opts
    # the user's home is hidden by the private one, bound over it
    assert ("--bind", str(tmp_path / "home/sandbox/a1/home"), str(tmp_path / "user")) in opts
    work = ("--bind", str(tmp_path / "work"), str(tmp_path / "work"))
    channel = ("--ro-bind", str(tmp_path / "home/run/channels/a1"), sandbox.CHANNEL_DIR)
    assert opts.index(work) > opts.index(("--tmpfs", "/tmp")) and channel in opts
    assert {("--unshare-pid",), ("--die-with-parent",), ("--clearenv",)} <= set(opts)
    assert ("--unshare-net",) not in opts
    assert ("--setenv", "MIYABI_CHANNEL", sandbox.CHANNEL) in opts and ("--setenv", "FOO", "bar baz") in opts
    assert opts.index(("--clearenv",)) < opts.index(("--setenv", "FOO", "bar baz"))
    assert "ANTHROPIC_API_KEY" in b.pass_env and "TERM" in b.pass_env
    assert ("--unshare-net",) in options(sandbox.bwrap_words(box(tmp_path, network=SandboxNetwork.NONE)))


def test_bwrap_hides_dirs_outside_tmp_once_and_binds_a_worktrees_git_dir(tmp_path: Path) -> None:
    b = sandbox.Box(
        name="a",
        settings=SandboxSettings(),
        workdir=Path("/srv/home/.miyabi/worktrees/a"),
        home=Path("/srv/home"),
        home_source=Path("/srv/home/.miyabi/sandbox/a/home"),
        channel_dir=Path("/srv/home/.miyabi/run/channels/a"),
        hidden=(Path("/tmp"), Path("/srv/home"), Path("/srv/home/.miyabi"), Path("/srv/other")),
        writable=(Path("/srv/repo/.git"),),
    )
    opts = options(sandbox.bwrap_words(b))
    assert ("--bind", "/srv/home/.miyabi/sandbox/a/home", "/srv/home") in opts
    assert ("--tmpfs", "/srv/home/.miyabi") not in opts  # already hidden by the private home
    assert ("--tmpfs", "/srv/other") in opts
    assert opts.index(("--bind", "/srv/repo/.git", "/srv/repo/.git")) > opts.index(("--tmpfs", "/srv/other"))


def test_the_pane_environment_passes_only_the_names_the_box_takes(tmp_path: Path) -> None:
    b = box(tmp_path, env=("EXTRA",))
    line = sandbox.box_line(b, "exec env")
    # run the variable-collecting prologue with a fake bwrap that prints its arguments
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (fake / "bwrap").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "ANTHROPIC_API_KEY": "k 1", "EXTRA": "e", "SECRET": "s", "TERM": "xterm"}
    out = subprocess.run(["/bin/sh", "-c", line], env=env, capture_output=True, text=True, check=True).stdout
    words = out.splitlines()
    tail = words[words.index("--clearenv") :]
    assert ["--setenv", "ANTHROPIC_API_KEY", "k 1"] == tail[tail.index("ANTHROPIC_API_KEY") - 1 :][:3]
    assert "EXTRA" in tail and "TERM" in tail
    assert "SECRET" not in words
    assert tail[tail.index("--") :] == ["--", "/bin/sh", "-c", "exec env"]


def test_docker_and_podman_lines_bind_the_same_paths_into_the_image(tmp_path: Path) -> None:
    b = box(tmp_path, engine=SandboxEngine.DOCKER, image="miyabi-agent:1", network=SandboxNetwork.NONE)
    line = sandbox.box_line(b, "exec claude")
    name = sandbox.container_name(b)
    assert line.startswith(f"docker rm -f {name} >/dev/null 2>&1; exec docker run --rm -i -t --init --name {name} ")
    words = shlex.split(line.split("; exec ", 1)[1])
    assert words[words.index("--network") + 1] == "none"
    assert f"{tmp_path / 'work'}:{tmp_path / 'work'}" in words
    assert f"{tmp_path / 'home/run/channels/a1'}:{sandbox.CHANNEL_DIR}:ro" in words
    assert "MIYABI_CHANNEL=" + sandbox.CHANNEL in words and "FOO=bar baz" in words
    assert words[words.index("ANTHROPIC_API_KEY") - 1] == "-e"  # passed from the client's environment when set
    assert words[-4:] == ["miyabi-agent:1", "/bin/sh", "-c", "exec claude"]
    p = sandbox.box_line(box(tmp_path, engine=SandboxEngine.PODMAN, image="i"), "exec claude")
    assert p.startswith("podman rm -f ") and "--userns keep-id" in p and " --network host " in p


def test_prepare_copies_the_profiles_login_into_the_private_home_once(tmp_path: Path) -> None:
    b = box(tmp_path)
    user = tmp_path / "user"
    (user / ".claude").mkdir()
    (user / ".claude" / ".credentials.json").write_text("login")
    (user / ".claude" / "projects").mkdir()
    (user / ".claude" / "projects" / "other.jsonl").write_text("another conversation")
    sandbox.prepare(b, user)
    assert (b.home_source / ".claude" / ".credentials.json").read_text() == "login"
    assert not (b.home_source / ".claude" / "projects").exists()
    (b.home_source / ".claude" / ".credentials.json").write_text("refreshed inside")
    sandbox.prepare(b, user)
    assert (b.home_source / ".claude" / ".credentials.json").read_text() == "refreshed inside"
    assert b.channel_dir.is_dir() and oct(b.channel_dir.stat().st_mode & 0o777) == "0o700"


def test_a_bind_that_holds_a_hidden_home_is_left_out(tmp_path: Path) -> None:
    b = box(tmp_path, binds=(str(tmp_path), str(tmp_path / "work")))
    assert tmp_path not in b.readonly  # it holds the miyabi home and the user's
    assert tmp_path / "work" in b.readonly
