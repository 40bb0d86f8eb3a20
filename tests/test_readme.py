"""README.md stays true: every `auditcov ...` command it shows is a real command with real options, every `make`
target it shows is in the Makefile, and every file of config/, bench/ and hack/ it names exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from auditcov.sink.cli import cli

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    """The commands in README: lines of its code blocks (continuations joined, `# ...` comments cut) and the
    text of its inline code spans."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", README, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line)
            if lines and (lines[-1].endswith("\\") or (line.startswith("    ") and lines[-1].startswith("auditcov "))):
                lines[-1] = lines[-1].rstrip("\\").rstrip() + " " + line.strip()
            else:
                lines.append(line)
    spans = [span for span in re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", README, flags=re.M | re.S))]
    return [line.strip() for line in lines + spans if line.strip()]


def auditcov_commands() -> list[str]:
    return [line for line in code_lines() if line.startswith("auditcov ")]


def option_names(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
    return names


def check_command(line: str) -> None:
    """Raise AssertionError unless `line` names an auditcov command and only options it has.

    The README's notation is allowed: `[...]` marks what is optional and `a|b` alternatives of a value."""
    words = shlex.split(line.replace("[", " ").replace("]", " "))[1:]
    command: click.Command = cli
    path = ["auditcov"]
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.get_command(click.Context(command), words[0])
        assert sub is not None, f"README shows `{line}`, but `{' '.join(path)}` has no command {words[0]!r}"
        command, path = sub, [*path, words.pop(0)]
    assert not isinstance(command, click.Group) or words, f"README shows `{line}`: a group, not a command"
    known = option_names(command)
    for word in words:
        if word == "--":
            break
        if word.startswith("-") and len(word) > 1:
            option = word.split("=", 1)[0]
            assert option in known, f"README shows `{line}`, but `{' '.join(path)}` has no option {option}"


def test_readme_shows_commands():
    commands = auditcov_commands()
    assert len(commands) > 20
    assert any(line.startswith("auditcov serve") for line in commands)


@pytest.mark.parametrize("line", auditcov_commands())
def test_every_auditcov_command_shown_is_real(line):
    check_command(line)


def test_the_check_catches_an_unknown_command_or_option():
    with pytest.raises(AssertionError, match="no command 'serv'"):
        check_command("auditcov serv --db x.db")
    with pytest.raises(AssertionError, match="has no option --dbb"):
        check_command("auditcov stats --dbb x.db")
    with pytest.raises(AssertionError, match="no option --nope"):
        check_command("auditcov cover report --run r [--nope]")
    check_command("auditcov cover run --run r -- python -m service --nope")


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    shown = {match for line in code_lines() for match in re.findall(r"(?:^|\s)make (\w[\w-]*)", line)}
    assert shown, "README shows no make target"
    assert shown <= targets, f"README shows make targets the Makefile lacks: {sorted(shown - targets)}"


def test_every_config_bench_and_hack_file_named_exists():
    named = set(re.findall(r"(?<![\w/.])((?:config|bench|hack)/[\w./-]*[\w/])", README))
    assert "config/policy.yaml" in named and "config/deploy/" in named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README names files that do not exist: {missing}"
