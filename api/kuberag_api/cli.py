"""The ``kuberag`` command: serve the API, ingest documents into the local index, ask a question."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path

from kuberag_contract import ENV_DATA_DIR

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


def _err(message: str) -> None:
    print(f"kuberag: {message}", file=sys.stderr)


def _data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get(ENV_DATA_DIR) or ".data")


# --- serve -----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    # Searches already run on a small thread pool; BLAS threads on top of it only add a tail
    # (10k-chunk search p99 ~12-20 ms multi-threaded, ~1.5 ms single-threaded, measured).
    # Set before numpy loads; an explicit user setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn
    from kuberag_contract.config import ConfigError

    from kuberag_api.app import create_app
    from kuberag_api.log_format import configure_logging
    from kuberag_api.settings import Settings, SettingsError

    env = dict(os.environ)
    if args.host:
        env["KUBERAG_HOST"] = args.host
    if args.port is not None:
        env["KUBERAG_PORT"] = str(args.port)
    if args.config:
        env["KUBERAG_CONFIG"] = args.config
    if args.data_dir:
        env[ENV_DATA_DIR] = args.data_dir
    try:
        settings = Settings.from_env(env)
        configure_logging(settings.server.log_level)
        app = create_app(settings)
    except (SettingsError, ConfigError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    from kuberag_api.http_protocol import LimitedHttpToolsProtocol

    shutdown = app.state.shutdown

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:  # type: ignore[override]
            shutdown.begin()  # new requests 503 from now on; in-flight ones get the bound
            super().handle_exit(sig, frame)

    # One worker per pod (scale with replicas); uvloop + httptools measured fastest here (README).
    config = uvicorn.Config(
        app, host=settings.server.host, port=settings.server.port, workers=1, loop="uvloop",
        # httptools with limits on the request head (431 before buffering it)
        http=LimitedHttpToolsProtocol, access_log=False, log_config=None, lifespan="on",
        # The client address is resolved by kuberag_api.identity from rateLimit.trustedProxies
        # (live config); uvicorn's rewrite would trust X-Forwarded-For from 127.0.0.1 always.
        proxy_headers=False,
        # Later than the app's own bound, which answers what is left with 503s (uvicorn's cancel
        # would make them 500s).
        timeout_graceful_shutdown=int(shutdown.seconds) + 5)
    Server(config).run()
    # An ingestion thread may still be embedding a document whose upload was already answered 503:
    # do not wait minutes for it (Python joins executor threads at exit). Each write is one SQLite
    # transaction (WAL), so the index stays whole whether or not it got that far.
    if any(t.is_alive() and t.name.startswith("kuberag-ingest") for t in threading.enumerate()):
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


# --- ingest ----------------------------------------------------------------------------------
def _files(paths: list[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, source name) pairs, directories walked recursively; and the paths that do not exist."""
    found: list[tuple[Path, str]] = []
    missing: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
                found.append((f, f.relative_to(p).as_posix()))
        elif p.is_file():
            found.append((p, p.name))
        else:
            missing.append(raw)
    return found, missing


def _load_config(path: str | None):
    """The ApiConfig of ``--config`` / KUBERAG_CONFIG / /etc/kuberag/config.yaml, else defaults."""
    from kuberag_contract.config import ApiConfig, load_config

    from kuberag_api.settings import Settings

    config_path = path or Settings.from_env().storage.config_path
    return load_config(str(config_path)) if config_path else ApiConfig()


def _open_store(args: argparse.Namespace, config):
    """The shared store of ``providers.vectorStore`` (connected), else the local embedded index."""
    from kuberag_api.rag import RagEngine

    if config.providers.vector_store is None:
        return RagEngine.open(_data_dir(args.data_dir), retrieval=config.retrieval)
    from kuberag_api.rag.weaviate_store import ServiceRef, WeaviateStore
    from kuberag_api.settings import Settings

    settings = Settings.from_env()
    store = WeaviateStore.from_config(
        config, ServiceRef(settings.service.namespace, settings.service.name),
        api_key=settings.providers.vector_store_api_key, embeddings_api_key=settings.providers.embeddings_api_key)
    store.connect()
    store.refresh()
    return store


def _shard(args: argparse.Namespace) -> tuple[int, int]:
    """(this shard, shard count): --shard, else an Indexed Job's JOB_COMPLETION_INDEX."""
    shards = args.shards
    shard = args.shard if args.shard is not None else int(os.environ.get("JOB_COMPLETION_INDEX") or 0)
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1} (--shards {shards})")
    return shard, shards


def _corpus_revision(files: list[tuple[Path, str]]) -> str:
    """A digest of a corpus directory (every file's name and bytes): recorded with the index."""
    import hashlib

    digest = hashlib.sha256()
    for path, source in files:
        try:
            digest.update(f"{source}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
        except OSError:
            digest.update(f"{source}\0unreadable\n".encode())
    return f"files:{digest.hexdigest()[:16]}"


class _IngestPlan:
    """What `kuberag ingest` indexes: files, or (``--sync``) one corpus directory and its revision."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, str]] = []
        self.missing: list[str] = []
        self.corpus: Path | None = None
        self.revision: str | None = None
        self.workdir: str | None = None  # a Git checkout, removed at the end


def _plan_git(args: argparse.Namespace, plan: _IngestPlan, store) -> str | None:
    """Check out the Git source into a temporary directory; a message when there is nothing to do."""
    import tempfile

    from kuberag_api.git_source import checkout, corpus_dir, git_env, resolve_commit

    plan.workdir = tempfile.mkdtemp(prefix="kuberag-git-")
    env = git_env(Path(plan.workdir) / "home")
    if args.if_changed:
        commit = resolve_commit(args.git, args.git_ref, env)
        if store.revision == commit:
            return f"{args.git} {args.git_ref} is at {commit[:12]}, which is indexed already: nothing to do"
    commit = checkout(args.git, args.git_ref, Path(plan.workdir) / "repo", env)
    plan.corpus = corpus_dir(Path(plan.workdir) / "repo", args.git_path)
    plan.revision = commit
    print(f"checked out {args.git} {args.git_ref} at {commit}", flush=True)
    return None


def _usage_problem(args: argparse.Namespace, shared: bool, shards: int) -> str | None:
    if shards > 1 and not shared:
        return "--shards needs a shared store (providers.vectorStore): shards of a local index would not meet"
    if args.git and not args.sync:
        return "--git needs --sync (the index then holds exactly the repository's documents)"
    if args.git and args.paths:
        return "give either PATHs or --git, not both"
    if args.git and shards > 1:
        return "a Git source is indexed by one pod (--shards 1): every document must come from the same commit"
    if args.if_changed and not (args.git and shared):
        return "--if-changed compares a Git commit with the shared index's revision: it needs --git and a shared store"
    if args.sync and not args.git and (len(args.paths) != 1 or not Path(args.paths[0]).is_dir()):
        return "--sync takes exactly one corpus directory (the index then holds exactly its files)"
    if not args.sync and not args.paths:
        return "nothing to ingest: give files or directories (or --sync --git URL)"
    return None


def cmd_ingest(args: argparse.Namespace) -> int:
    import shutil

    from kuberag_contract.config import ConfigError

    from kuberag_api.git_source import GitSourceError
    from kuberag_api.rag.store import corpus_files

    try:
        config = _load_config(args.config)
        shard, shards = _shard(args)
    except (ConfigError, OSError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    shared = config.providers.vector_store is not None
    problem = _usage_problem(args, shared, shards)
    if problem:
        _err(problem)
        return EXIT_USAGE
    plan = _IngestPlan()
    if not args.sync:
        plan.files, plan.missing = _files(args.paths)
        for m in plan.missing:
            _err(f"{m}: no such file or directory")
        if not plan.files:
            _err("nothing to ingest" + (" (every path was missing)" if plan.missing else ""))
            return EXIT_USAGE
    try:
        store = _open_store(args, config)
    except Exception as exc:  # a store that cannot open is one clear line, not a trace
        _err(f"cannot open the index: {exc}")
        return EXIT_FAILED
    try:
        if args.git:
            nothing_to_do = _plan_git(args, plan, store)
            if nothing_to_do:
                print(nothing_to_do, flush=True)
                return EXIT_OK
        elif args.sync:
            plan.corpus = Path(args.paths[0])
        if plan.corpus is not None:
            every = corpus_files(plan.corpus)
            if shared and plan.revision is None:
                plan.revision = args.revision or _corpus_revision(every)
            if shards > 1:
                from kuberag_api.rag.weaviate_store import shard_of

                every = [(p, s) for p, s in every if shard_of(s, shards) == shard]
            plan.files = every
        return _run_ingest(args, store, plan, shared, shard, shards)
    except GitSourceError as exc:
        _err(str(exc))
        return EXIT_FAILED
    finally:
        store.close()
        if plan.workdir:
            shutil.rmtree(plan.workdir, ignore_errors=True)


def _run_ingest(args: argparse.Namespace, store, plan: _IngestPlan, shared: bool, shard: int, shards: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kuberag_api.rag import DocumentError

    console = Console(stderr=False)
    files = plan.files
    if shared:
        print(f"indexing into Weaviate {store.config.url} for {store.service.key}"
              + (f", shard {shard + 1} of {shards}" if shards > 1 else "")
              + (f", revision {plan.revision}" if plan.revision else ""), flush=True)
    results: list[tuple[str, str, int, str | None]] = []
    # In a Job's log (no terminal) a line per document; on a terminal a progress bar.
    live = console.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not live) as progress:
        task = progress.add_task("ingesting", total=len(files))

        def readable():
            for path, source in files:
                progress.update(task, description=f"ingesting {source[:40]}")
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    results.append((source, "refused", 0, f"cannot read: {exc.strerror or exc}"))
                    progress.advance(task)
                    continue
                yield source, data, None

        def done(r) -> None:
            results.append((r.source, r.status, r.chunks, r.reason))
            progress.advance(task)
            if not live:
                print(f"[{len(results)}/{len(files)}] {r.status} {r.source} ({r.chunks} chunks)"
                      + (f": {r.reason}" if r.reason else ""), flush=True)

        try:
            if plan.corpus is not None and shared:
                store.sync_corpus(plan.corpus, build_id=args.build_id, shard=shard, shards=shards,
                                  revision=plan.revision, progress=done)
            elif plan.corpus is not None:
                for r in store.sync_corpus(plan.corpus):
                    done(r)
            else:
                # One batch: the embedded index (BM25, snapshot) is published once, not per file.
                store.ingest_many(readable(), progress=done)
        except DocumentError as exc:
            _err(str(exc))
            return EXIT_REFUSED
        except Exception as exc:
            _err(f"ingestion failed: {type(exc).__name__}: {exc}")
            return EXIT_FAILED
    table = Table(title="ingestion summary")
    for col in ("source", "status", "chunks", "reason"):
        table.add_column(col)
    for source, status, chunks, reason in results:
        table.add_row(source, status, str(chunks), reason or "")
    console.print(table)
    counts: dict[str, int] = {}
    for _, status, _, _ in results:
        counts[status] = counts.get(status, 0) + 1
    where = f"index {store.collection}" if shared else "index"
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                  f"; {where}: {store.document_count} documents, {store.chunk_count} chunks", soft_wrap=True)
    # Non-zero when anything was refused or missing, so scripts notice.
    return EXIT_REFUSED if counts.get("refused") or plan.missing else EXIT_OK


# --- ask -------------------------------------------------------------------------------------
def cmd_ask(args: argparse.Namespace) -> int:
    question = args.question.strip()
    if not question:
        _err("the question is empty")
        return EXIT_USAGE
    if len(question) > 500:
        _err(f"the question has {len(question)} characters; at most 500 are allowed")
        return EXIT_USAGE
    if args.url:
        import httpx

        url = args.url.rstrip("/") + "/query"
        try:
            r = httpx.post(url, json={"question": question, "use_cache": not args.no_cache}, timeout=60)
        except httpx.HTTPError as exc:
            _err(f"cannot reach {url}: {exc}")
            return EXIT_FAILED
        if r.status_code != 200:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            _err(f"{url} answered {r.status_code}: {detail}")
            return EXIT_FAILED
        body = r.json()
        answer, sources = body["answer"], body["sources"]
        footer = f"({body['latency_ms']:.1f} ms, cache {body.get('cache_level') or 'miss'}, model {body.get('model')})"
    else:
        from kuberag_contract.config import Retrieval

        from kuberag_api.rag import ExtractiveGenerator, RagEngine

        data_dir = _data_dir(args.data_dir)
        if not data_dir.exists():
            _err(f"no index at {data_dir}: run `kuberag ingest PATH...` first or pass --url of a server")
            return EXIT_USAGE
        engine = RagEngine.open(data_dir, retrieval=Retrieval())
        passages = engine.retrieve(question)
        answer = asyncio.run(ExtractiveGenerator().generate(question, passages)).text
        sources = [{"source": p.source, "score": p.score} for p in passages]
        footer = f"({engine.document_count} documents, {engine.chunk_count} chunks in {data_dir})"
        engine.close()
    print(answer)
    print()
    for i, s in enumerate(sources, 1):
        print(f"[{i}] {s['source']} (score {s['score']:.3f})")
    print(footer)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kuberag", description="Questions over your documents.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API (settings from KUBERAG_* env vars)")
    serve.add_argument("--host", help="bind address (KUBERAG_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (KUBERAG_PORT, default 8000)")
    serve.add_argument("--config", help="config file (KUBERAG_CONFIG)")
    serve.add_argument("--data-dir", help="index directory (KUBERAG_DATA_DIR)")
    serve.set_defaults(func=cmd_serve)

    ingest = sub.add_parser(
        "ingest", help="add files (txt, md, html, pdf; directories recursively) to the index: the local one, "
                       "or the shared Weaviate when the config sets providers.vectorStore")
    ingest.add_argument("paths", nargs="*", metavar="PATH")
    ingest.add_argument("--data-dir", help="index directory (KUBERAG_DATA_DIR, default ./.data)")
    ingest.add_argument("--config", help="config file (KUBERAG_CONFIG): retrieval settings and the vector store")
    ingest.add_argument("--sync", action="store_true",
                        help="make the index hold exactly the files of one directory (plus documents uploaded "
                             "through the API); with Weaviate: build a new index version, switch when complete")
    ingest.add_argument("--shards", type=int, default=1, help="with --sync: the Indexed Job's completions")
    ingest.add_argument("--shard", type=int, help="with --sync: this shard (default: JOB_COMPLETION_INDEX or 0)")
    ingest.add_argument("--build-id", help="with --sync: the index version every shard writes (the Job's)")
    ingest.add_argument("--revision", help="with --sync: the corpus revision recorded with the index "
                                           "(default: a Git commit, else a digest of the files)")
    ingest.add_argument("--git", metavar="URL", help="with --sync: index a Git repository (https://, ssh://, file://; "
                                                     "credentials from KUBERAG_GIT_USERNAME/KUBERAG_GIT_PASSWORD)")
    ingest.add_argument("--git-ref", default="main", help="with --git: branch, tag or commit (default main)")
    ingest.add_argument("--git-path", default="", help="with --git: the documents' directory in the repository")
    ingest.add_argument("--if-changed", action="store_true",
                        help="with --git: exit at once when the ref's commit is the one the index holds")
    ingest.set_defaults(func=cmd_ingest)

    ask = sub.add_parser("ask", help="answer a question from the local index, or from a server with --url")
    ask.add_argument("question")
    ask.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    ask.add_argument("--data-dir", help="index directory (KUBERAG_DATA_DIR, default ./.data)")
    ask.add_argument("--no-cache", action="store_true", help="with --url: bypass the answer cache")
    ask.set_defaults(func=cmd_ask)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear message instead of a traceback
        _err(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
