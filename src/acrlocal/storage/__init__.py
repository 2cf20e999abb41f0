"""Storage: content-addressed blobs and SQL metadata, each behind a narrow interface.

``blobs.BlobStore`` is implemented on the file system here and is shaped so that an Azure Blob Storage
backend can implement it (staged uploads, commit by digest, ranged reads). The metadata stores of each room
use SQLAlchemy Core on the engine made by :func:`acrlocal.storage.sql.open_engine`: SQLite by default,
PostgreSQL by URL.

- :mod:`.sql`: the engine and the shared ``MetaData`` every room declares its tables on.
- :mod:`.digest`: ``Digest``, the content address (pure; the registry parses them with it).
- :mod:`.blobs`: ``BlobStore`` and ``FileBlobStore``.
- :mod:`.registries`: the list of registries (``RegistryTable``).
- :mod:`.metadata`: what the data plane asks of registries' content (``RegistryMetadata``), and its records.
- :mod:`.content_tables`: the content's tables; :mod:`.sql_metadata`: ``SqlRegistryMetadata`` on them, with the
  in-process cache of :mod:`.manifest_cache`.
- :mod:`.artifacts`: ACR's view of that content for ``/acr/v1`` and the locks (``SqlArtifacts``).
"""
