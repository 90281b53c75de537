"""deploy/kuberay/Dockerfile builds from what a clean clone holds (there is no Docker daemon to build it here)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "kuberay" / "Dockerfile"


def build_stage_commands() -> list[str]:
    """The shell commands of the first stage's RUN lines, in order (continuations joined, ``&&`` split)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = re.split(r"^FROM ", text, flags=re.MULTILINE)[1]  # [0] is the header comment
    commands: list[str] = []
    for line in stage.splitlines():
        if line.startswith("RUN "):
            commands += [part.strip() for part in line[4:].split("&&")]
    return commands


def test_the_image_makes_the_patched_str0m_before_it_builds() -> None:
    # Cargo builds str0m from a path that git does not hold: the image must make it, as the Makefile does.
    patch = tomllib.loads((ROOT / "Cargo.toml").read_text())["patch"]["crates-io"]["str0m"]["path"]
    ignored = subprocess.run(["git", "check-ignore", "-q", patch], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{patch} is committed: then this test no longer applies"
    script = (ROOT / "rust" / "patches" / "prepare-str0m").read_text()
    assert re.search(r'dest="\$root/\.build/str0m-\$version"', script) and patch == ".build/str0m-0.25.0"
    commands = build_stage_commands()
    prepare = [i for i, c in enumerate(commands) if "rust/patches/prepare-str0m" in c]
    build = [i for i, c in enumerate(commands) if c.startswith("maturin build")]
    assert prepare and build, commands
    assert prepare[0] < build[0]


def test_the_build_context_leaves_out_this_machines_builds() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv/", ".build/", "target/"):
        assert path in ignored
    assert ".cargo/" not in ignored  # its [env] (aws-lc without jitter entropy) applies to the image's build too
