"""A Git repository as a corpus source: which commit a ref names now, and a shallow checkout of it.

The indexing Job and its CronJob run ``kuberag ingest --sync --git URL --git-ref REF``: the CronJob
compares the commit with the revision recorded with the index in service and exits at once when
they are the same. Credentials (a Secret in the RagService) come as ``KUBERAG_GIT_USERNAME`` /
``KUBERAG_GIT_PASSWORD`` and reach git through a credential helper that reads them from the
environment, never on a command line or in a file. Git never prompts.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from kuberag_contract import ENV_GIT_PASSWORD, ENV_GIT_USERNAME

_SHA = re.compile(r"^[0-9a-f]{40}$")
# The helper git runs for "get": it prints the username and password from the environment.
_CREDENTIAL_HELPER = (f'!f() {{ test "$1" = get && echo "username=${{{ENV_GIT_USERNAME}}}" && '
                      f'echo "password=${{{ENV_GIT_PASSWORD}}}"; }}; f')


class GitSourceError(RuntimeError):
    """git failed; the message has its own error text."""


def git_env(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment git runs with: a writable HOME (the root filesystem is read-only in a pod),
    no system or global config, no prompts."""
    base = dict(os.environ if env is None else env)
    return {**base, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}


def _git(args: list[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = 600) -> str:
    command = ["git"]
    if env.get(ENV_GIT_USERNAME) or env.get(ENV_GIT_PASSWORD):
        command += ["-c", f"credential.helper={_CREDENTIAL_HELPER}"]
    try:
        done = subprocess.run(command + args, env=dict(env), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise GitSourceError("git is not installed (the kuberag image needs it for a Git corpus source)") from None
    except subprocess.TimeoutExpired:
        raise GitSourceError(f"git {args[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise GitSourceError(f"git {args[0]} failed: {done.stderr.strip()[-1000:] or done.returncode}")
    return done.stdout


def resolve_commit(url: str, ref: str, env: Mapping[str, str]) -> str:
    """The commit ``ref`` (a branch, a tag or a commit id) names in the remote now."""
    if _SHA.match(ref):
        return ref
    out = _git(["ls-remote", "--", url, ref, f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"],
               env, timeout=120)
    refs = dict(reversed(line.split("\t", 1)) for line in out.splitlines() if "\t" in line)
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in refs:
            return refs[name]
    raise GitSourceError(f"{url} has no branch or tag named {ref!r}")


def checkout(url: str, ref: str, dest: Path, env: Mapping[str, str]) -> str:
    """A depth-1 checkout of ``ref`` into ``dest`` (created); returns the commit checked out."""
    dest.mkdir(parents=True, exist_ok=True)
    _git(["init", "-q", str(dest)], env)
    _git(["fetch", "-q", "--depth", "1", "--", url, ref], env, cwd=dest)
    _git(["checkout", "-q", "--detach", "FETCH_HEAD"], env, cwd=dest)
    return _git(["rev-parse", "HEAD"], env, cwd=dest).strip()


def corpus_dir(checkout_dir: Path, path: str) -> Path:
    """The corpus directory inside a checkout (``path`` relative, never leaving it)."""
    root = checkout_dir.resolve()
    target = (root / path).resolve() if path else root
    if target != root and root not in target.parents:
        raise GitSourceError(f"git path {path!r} leaves the repository")
    if not target.is_dir():
        raise GitSourceError(f"the repository has no directory {path!r}")
    return target
