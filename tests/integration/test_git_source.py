"""The Git corpus source: refs resolved, a checkout's corpus directory kept inside the repository,
credentials handed to git only through its environment (a real git on a local repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kuberag_api.git_source import GitSourceError, checkout, corpus_dir, git_env, resolve_commit

pytestmark = pytest.mark.integration  # runs git


def _repo(path: Path) -> str:
    (path / "docs").mkdir(parents=True)
    (path / "docs" / "a.md").write_text("# A\n\ntext\n")
    run = {"cwd": path, "check": True, "capture_output": True, "text": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **run)
    subprocess.run(["git", "add", "."], **run)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-q", "-m", "a"], **run)
    subprocess.run(["git", "tag", "v1"], **run)
    return subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()


def test_branch_tag_and_commit_resolve_and_check_out(tmp_path: Path):
    commit = _repo(tmp_path / "repo")
    env = git_env(tmp_path / "home")
    url = f"file://{tmp_path / 'repo'}"
    assert resolve_commit(url, "main", env) == commit
    assert resolve_commit(url, "v1", env) == commit
    assert resolve_commit(url, commit, env) == commit
    assert checkout(url, "main", tmp_path / "out", env) == commit
    assert (corpus_dir(tmp_path / "out", "docs") / "a.md").is_file()
    with pytest.raises(GitSourceError, match="no branch or tag named 'nope'"):
        resolve_commit(url, "nope", env)
    with pytest.raises(GitSourceError, match="git ls-remote failed"):
        resolve_commit(f"file://{tmp_path / 'missing'}", "main", env)


def test_the_corpus_path_stays_inside_the_checkout(tmp_path: Path):
    _repo(tmp_path / "repo")
    with pytest.raises(GitSourceError, match="leaves the repository"):
        corpus_dir(tmp_path / "repo", "../..")
    with pytest.raises(GitSourceError, match="has no directory"):
        corpus_dir(tmp_path / "repo", "nothing")
    assert corpus_dir(tmp_path / "repo", "") == (tmp_path / "repo").resolve()


def test_git_never_prompts_and_uses_a_writable_home(tmp_path: Path):
    env = git_env(tmp_path / "home", {"PATH": "/usr/bin:/bin", "KUBERAG_GIT_PASSWORD": "s3cret"})
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["HOME"] == str(tmp_path / "home")
    assert env["KUBERAG_GIT_PASSWORD"] == "s3cret"  # reaches git's credential helper, not its command line
