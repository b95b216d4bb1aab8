"""The Chroma store: connecting (embedded or server), collection metadata, and thumbnails beside it."""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .embedders import Embedder
from .errors import StoreError
from .ids import image_id as checked_image_id

DEFAULT_COLLECTION = "images"
THUMBNAILS = "thumbnails"
MANIFESTS = "manifests"
LOCK_FILE = ".write.lock"
PAGE = 5000  # records per read when a whole collection is scanned
STORE_FORMAT = 1
# ef_search is read when a process first loads the index, so it is fixed at creation. On 100k
# clustered vectors (bench/run.py) 128 gave recall@10 0.87-0.95, 384 gives >= 0.99 at ~3.6 ms.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 384, "max_neighbors": 32}


def connect(store_dir: str | Path, *, create: bool = False) -> Any:
    """A Chroma client: the server named by CHROMA_HOST/CHROMA_PORT if set, else the embedded store."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    host = os.environ.get("CHROMA_HOST")
    if host:
        port = int(os.environ.get("CHROMA_PORT", "8000"))
        headers = {"x-chroma-token": os.environ["CHROMA_TOKEN"]} if os.environ.get("CHROMA_TOKEN") else None
        try:
            client = chromadb.HttpClient(host=host, port=port, headers=headers, settings=settings)
            client.heartbeat()
            return client
        except Exception as exc:
            raise StoreError("cannot reach the Chroma server; check that it is running, then try again",
                             internals=f"{host}:{port}: {type(exc).__name__}: {exc}") from exc
    store_dir = Path(store_dir)
    if not create and not (store_dir / "chroma.sqlite3").exists():
        raise StoreError(
            "there is no index yet. Build one with: python index_builder.py --dataset SOURCE --store STORE",
            internals=f"no chroma.sqlite3 in {store_dir}",
        )
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(store_dir), settings=settings)
    except Exception as exc:
        raise StoreError(
            "the store cannot be opened; it may be damaged or from another chromadb version: "
            "rebuild it with index_builder.py into a new --store",
            internals=f"{store_dir}: {type(exc).__name__}: {exc}",
        ) from exc


@contextmanager
def write_lock(store_dir: str | Path) -> Iterator[None]:
    """Hold the embedded store's write lock, or fail at once: two processes must not write one Chroma folder."""
    if os.environ.get("CHROMA_HOST"):  # the server serialises writers itself
        yield
        return
    path = Path(store_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StoreError(
                "another process is writing to the store; wait for it to finish, "
                "or run a Chroma server (CHROMA_HOST) for several writers at once",
                internals=f"{holder} is writing to the store at {store_dir}",
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def check_health(collection: Any, store_dir: str | Path) -> None:
    """Touch the collection's vector index so damage shows now, as a StoreError, not mid-query."""
    import chromadb

    meta = collection.metadata or {}
    built_with = str(meta.get("chromadb_version", ""))
    if int(meta.get("format", STORE_FORMAT)) > STORE_FORMAT or _major(built_with) > _major(chromadb.__version__):
        raise StoreError(
            f"the store was written by a newer version (chromadb {built_with}, store format "
            f"{meta.get('format')}) than this one (chromadb {chromadb.__version__}, format {STORE_FORMAT}); "
            "upgrade, or rebuild the store",
            internals=str(store_dir),
        )
    try:
        count = collection.count()
        dimension = int(meta.get("dimension") or 0)
        if count and dimension:
            probe = [1.0] + [0.0] * (dimension - 1)
            collection.query(query_embeddings=[probe], n_results=1, include=["distances"])
    except Exception as exc:
        raise StoreError(
            "the store is damaged; rebuild it: python index_builder.py --dataset SOURCE --store NEW_DIR",
            internals=f"{store_dir}: {type(exc).__name__}: {str(exc)[:200]}",
        ) from exc


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def model_reference(name: str) -> str:
    """How a model is recorded: a local checkpoint by absolute path, a Hub model by name."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def open_collection(client: Any, name: str, embedder: Embedder | None = None, source: str = "") -> Any:
    """Get a collection; with ``embedder``, create it if missing and check that it was built by that model."""
    import chromadb

    if len(name) < 3 or len(name) > 63:
        raise StoreError(f"collection name {name!r} must have 3 to 63 characters")
    existing = {c.name for c in client.list_collections()}
    if name not in existing:
        if embedder is None:
            known = ", ".join(sorted(existing)) or "none"
            raise StoreError(f"no collection {name!r} in the store", internals=f"collections: {known}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        metadata = {
            "model": model_reference(embedder.name),
            "dimension": embedder.dimension,
            "normalized": embedder.normalized,
            "source": source or "unknown",
            "built_at": now,
            "chromadb_version": chromadb.__version__,
            "format": STORE_FORMAT,
        }
        try:
            return client.create_collection(
                name, configuration={"hnsw": HNSW}, metadata=metadata, embedding_function=None
            )
        except Exception as exc:
            if name not in {c.name for c in client.list_collections()}:
                raise StoreError(f"cannot create collection {name!r}: {exc}") from exc
            # Another builder created it between our look and our create: use theirs.
    collection = client.get_collection(name, embedding_function=None)
    if embedder is not None:
        check_model(collection, embedder, strict=True)
    return collection


def check_model(collection: Any, embedder: Embedder, *, strict: bool) -> None:
    """Refuse a model of another dimension; with ``strict``, any model other than the recorded one."""
    meta = collection.metadata or {}
    dimension = meta.get("dimension")
    if dimension is not None and int(dimension) != embedder.dimension:
        raise StoreError(
            f"the collection holds {dimension}-d vectors, but the model makes {embedder.dimension}-d vectors",
            internals=f"collection {collection.name!r} from {meta.get('model')!r}, model {embedder.name!r}",
        )
    recorded = meta.get("model")
    if strict and recorded and recorded != model_reference(embedder.name):
        raise StoreError(
            "the collection was built with another model; add to it with the model it records, "
            "or choose another --collection",
            internals=f"collection {collection.name!r} was built with --model {recorded}, not {embedder.name}",
        )


def load_manifest(store_dir: Path, collection: str) -> dict[str, list]:
    """What earlier builds saw: source -> [size, mtime_ns, id]; a cache only, so damage just costs a re-read."""
    try:
        return json.loads(_manifest_path(store_dir, collection).read_text())
    except (OSError, ValueError):
        return {}


def save_manifest(store_dir: Path, collection: str, manifest: dict[str, list]) -> None:
    """Write the manifest atomically."""
    path = _manifest_path(store_dir, collection)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)


def _manifest_path(store_dir: Path, collection: str) -> Path:
    return Path(store_dir) / MANIFESTS / f"{collection}.json"


def remove_images(client: Any, collection: Any, ids: list[str], store_dir: Path) -> list[str]:
    """Delete the records ``collection`` holds among ``ids``; return those removed.

    A thumbnail goes too once no collection in the store still holds its image.
    """
    held = collection.get(ids=list(ids), include=[])["ids"] if ids else []
    if not held:
        return []
    collection.delete(ids=held)
    others = [c for c in client.list_collections() if c.name != collection.name]
    still_used: set[str] = set()
    for other in others:
        still_used.update(client.get_collection(other.name, embedding_function=None).get(ids=held, include=[])["ids"])
    for image_id in set(held) - still_used:
        thumbnail_path(store_dir, image_id).unlink(missing_ok=True)
    return held


def read_all(collection: Any, field: str) -> tuple[list[str], list]:
    """Every record's id and ``field`` ("metadatas" or "embeddings"), read in pages Chroma can serve."""
    ids: list[str] = []
    values: list = []
    for offset in range(0, collection.count(), PAGE):
        got = collection.get(include=[field], limit=PAGE, offset=offset)
        ids.extend(got["ids"])
        values.extend(got[field])
    return ids, values


def thumbnail_path(store_dir: Path, image_id: str) -> Path:
    """Where an image's thumbnail lives: content-addressed, shared by every collection in the store.

    Only a well-formed id makes a path, so no id can name a file outside the thumbnails folder.
    """
    image_id = checked_image_id(image_id)
    return Path(store_dir) / THUMBNAILS / image_id[:2] / f"{image_id}.jpg"


def write_thumbnail(store_dir: Path, image_id: str, data: bytes) -> str:
    """Write a thumbnail atomically; return its path relative to the store."""
    path = thumbnail_path(store_dir, image_id)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    return path.relative_to(store_dir).as_posix()


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (the store's size on disk, or a cache's)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # deleted while we walked
                pass
    return total
