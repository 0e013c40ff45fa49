"""The web bet slip build: npm ci + codegen + esbuild -> gateway/web/dist (skipped when nothing changed)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from inplay_edge.settings import repo_root

# ------------------------------------------------------------------------------------------------ web build


def _tree_hash(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def _files(base: Path, patterns: Sequence[str]) -> list[Path]:
    return [p for pattern in patterns for p in base.glob(pattern) if p.is_file()]


def _run(cmd: Sequence[str], cwd: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def build_web(root: Path | None = None, force: bool = False) -> Path:
    """Builds gateway/web into gateway/web/dist. Idempotent: a step is skipped when its inputs are unchanged.

    1. ``npm ci`` when package-lock.json changed;  2. TypeScript types for the protos (protoc-gen-es via
    grpc_tools.protoc);  3. esbuild bundle + static files.
    """
    root = root or repo_root()
    web = root / "gateway" / "web"
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to build the web bet slip")
    node_modules = web / "node_modules"
    lock_hash = _tree_hash([web / "package-lock.json", web / "package.json"])
    if _stale(node_modules / ".inplay-stamp", lock_hash, force):
        _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], web)
        (node_modules / ".inplay-stamp").write_text(lock_hash)
    _generate_types(root, web / "gen", node_modules, force)
    dist = web / "dist"
    dist_hash = _tree_hash([*_files(web, ["src/**/*", "gen/**/*.ts", "tsconfig.json"]), web / "package-lock.json"])
    if _stale(dist / ".inplay-stamp", dist_hash, force):
        _bundle(web, dist, node_modules)
        (dist / ".inplay-stamp").write_text(dist_hash)
    return dist


def _stale(stamp: Path, want: str, force: bool) -> bool:
    return force or not stamp.is_file() or stamp.read_text() != want


def _generate_types(root: Path, gen: Path, node_modules: Path, force: bool) -> None:
    """TypeScript types of the protos (and google.rpc's error details) with protoc-gen-es."""
    protos = sorted((root / "proto").glob("inplay/*/v1/*.proto"))
    google_rpc = _site_proto_root() / "google" / "rpc" / "error_details.proto"
    plugin = node_modules / ".bin" / "protoc-gen-es"
    gen_hash = _tree_hash([*protos, google_rpc, node_modules / "@bufbuild" / "protoc-gen-es" / "package.json"])
    if not _stale(gen / ".inplay-stamp", gen_hash, force):
        return
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise SystemExit("grpcio-tools is needed (./dev setup)")
    wkt = Path(spec.origin).parent / "_proto"
    includes = [f"-I{root / 'proto'}", f"-I{_site_proto_root()}", f"-I{wkt}"]
    sources = [*[str(p.relative_to(root / "proto")) for p in protos], "google/rpc/error_details.proto"]
    plugin_args = [f"--plugin=protoc-gen-es={plugin}", f"--es_out={gen}", "--es_opt=target=ts"]
    _run([sys.executable, "-m", "grpc_tools.protoc", *includes, *plugin_args, *sources], root / "proto")
    (gen / ".inplay-stamp").write_text(gen_hash)


def _bundle(web: Path, dist: Path, node_modules: Path) -> None:
    """Type-checks, bundles src/main.ts with esbuild and copies the static files."""
    dist.mkdir(parents=True, exist_ok=True)
    _run([str(node_modules / ".bin" / "tsc"), "--noEmit", "-p", "."], web)
    esbuild = [str(node_modules / ".bin" / "esbuild"), "src/main.ts", "--bundle", "--minify", "--format=esm"]
    _run([*esbuild, "--target=es2022", "--log-level=warning", f"--outfile={dist / 'app.js'}"], web)
    shutil.copyfile(web / "src" / "index.html", dist / "index.html")
    shutil.copyfile(web / "src" / "app.css", dist / "app.css")


def _site_proto_root() -> Path:
    """Where googleapis-common-protos installed google/rpc/*.proto."""
    from google.rpc import error_details_pb2

    return Path(error_details_pb2.__file__).parents[2]
