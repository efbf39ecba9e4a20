//! The chunk cache's index: which chunks are on disk (`cache_chunks`: size, last use,
//! pinned) and which chunks make up which file version (`cache_manifest`). The chunk
//! store (`cache::store`) keeps the files; every SQL statement about them is here.
//!
//! The index has its own connection (the store's writer thread commits on it while the
//! serving core reads the catalog on another), set up by the same [`connect`] as the
//! catalog's.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::{connect, Catalog, CatalogError, Result};

/// A chunk's BLAKE3 hash.
pub type ChunkHash = [u8; 32];

/// One chunk written to disk, to be indexed: `hash` is chunk `idx` of version `stamp`
/// of file `file`.
#[derive(Debug, Clone)]
pub struct ChunkRecord<'a> {
    /// The chunk's hash.
    pub hash: ChunkHash,
    /// Its size in bytes.
    pub size: u64,
    /// The file it belongs to.
    pub file: i64,
    /// Its index in the file.
    pub idx: u64,
    /// The file version's stamp.
    pub stamp: &'a str,
    /// Never evicted (headers and art).
    pub pinned: bool,
}

/// What the index says about the cache as a whole.
#[derive(Debug, Clone, Default)]
pub struct IndexStats {
    /// Chunks indexed.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of pinned chunks.
    pub pinned_bytes: u64,
    /// Files with a manifest.
    pub files: u64,
    /// Bytes of files the manifests describe.
    pub logical_bytes: u64,
    /// Per remote origin: `(name, files fully cached, files)`.
    pub per_origin: Vec<(String, u64, u64)>,
}

/// The chunk index over its own catalog connection.
pub struct ChunkIndex {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkIndex").field("path", &self.path).finish()
    }
}

impl ChunkIndex {
    /// Opens the index of the catalog at `path` (created and migrated first if needed).
    ///
    /// # Errors
    /// Catalog errors.
    pub fn open(path: &Path) -> Result<Self> {
        drop(Catalog::open(path)?);
        let conn = connect(path)?;
        Ok(Self { conn, path: path.to_owned() })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
        move |source| CatalogError::Sqlite { path: self.path.clone(), source }
    }

    /// Bytes of every chunk indexed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn total_bytes(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT coalesce(sum(size), 0) FROM cache_chunks", [], |r| r.get(0))
            .map_err(self.err())?;
        Ok(n.max(0) as u64)
    }

    /// The manifest of `file` for `stamp` and `chunk_size`: `n` entries, `None` where
    /// unknown. Rows of another stamp or chunk size are deleted (the file changed, or
    /// the chunk size did).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn manifest(&self, file: i64, stamp: &str, chunk_size: u64, n: usize) -> Result<Vec<Option<ChunkHash>>> {
        let mut out = vec![None; n];
        let mut stale = false;
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT idx, stamp, chunk_size, hash FROM cache_manifest WHERE file_id = ?1")
                .map_err(self.err())?;
            let rows = st
                .query_map([file], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
                })
                .map_err(self.err())?;
            for row in rows {
                let (idx, st_, cs, h) = row.map_err(self.err())?;
                let hash = ChunkHash::try_from(h.as_slice());
                match (usize::try_from(idx), hash) {
                    (Ok(i), Ok(h)) if st_ == stamp && cs as u64 == chunk_size && i < n => out[i] = Some(h),
                    _ => stale = true,
                }
            }
        }
        if stale {
            self.conn
                .execute(
                    "DELETE FROM cache_manifest WHERE file_id = ?1 AND (stamp != ?2 OR chunk_size != ?3)",
                    params![file, stamp, chunk_size as i64],
                )
                .map_err(self.err())?;
        }
        Ok(out)
    }

    /// Forgets the manifest of `file` (its chunks are then unreferenced, evicted first).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn drop_manifest(&self, file: i64) -> Result<()> {
        self.conn.execute("DELETE FROM cache_manifest WHERE file_id = ?1", [file]).map_err(self.err())?;
        Ok(())
    }

    /// Removes one chunk; returns its size if it was indexed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_chunk(&self, hash: &ChunkHash) -> Result<Option<u64>> {
        let size: Option<i64> = self
            .conn
            .query_row("DELETE FROM cache_chunks WHERE hash = ?1 RETURNING size", [hash.as_slice()], |r| r.get(0))
            .optional()
            .map_err(self.err())?;
        Ok(size.map(|s| s.max(0) as u64))
    }

    /// Removes chunks (eviction); a chunk already gone is no error.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_chunks(&mut self, hashes: &[ChunkHash]) -> Result<()> {
        let path = &self.path;
        let e = |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx.prepare_cached("DELETE FROM cache_chunks WHERE hash = ?1").map_err(e)?;
            for h in hashes {
                st.execute([h.as_slice()]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Indexes chunks written to disk, in one transaction; a manifest row is written only
    /// while its file is still in the catalog. Returns the bytes of chunks new to the
    /// index.
    ///
    /// # Errors
    /// SQLite errors (nothing is indexed).
    pub fn record(&mut self, chunks: &[ChunkRecord<'_>], chunk_size: u64, now_ms: i64) -> Result<u64> {
        let path = &self.path;
        let e = |source| CatalogError::Sqlite { path: path.clone(), source };
        let mut added = 0u64;
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut chunk = tx
                .prepare_cached(
                    "INSERT INTO cache_chunks(hash, size, last_used, pinned) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(hash) DO UPDATE SET last_used = excluded.last_used, pinned = max(pinned, excluded.pinned)",
                )
                .map_err(e)?;
            let mut exists = tx.prepare_cached("SELECT 1 FROM cache_chunks WHERE hash = ?1").map_err(e)?;
            let mut man = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO cache_manifest(file_id, idx, stamp, chunk_size, hash)
                     SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM files WHERE id = ?1)",
                )
                .map_err(e)?;
            for c in chunks {
                let new = exists.query_row([c.hash.as_slice()], |_| Ok(())).optional().map_err(e)?.is_none();
                chunk.execute(params![c.hash.as_slice(), c.size as i64, now_ms, c.pinned]).map_err(e)?;
                if new {
                    added += c.size;
                }
                man.execute(params![c.file, c.idx as i64, c.stamp, chunk_size as i64, c.hash.as_slice()]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(added)
    }

    /// Records when chunks were last used: `(hash, time in ms)`, never moving back.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn touch(&mut self, used: &[(ChunkHash, i64)]) -> Result<()> {
        let path = &self.path;
        let e = |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached("UPDATE cache_chunks SET last_used = max(last_used, ?2) WHERE hash = ?1")
                .map_err(e)?;
            for (h, t) in used {
                st.execute(params![h.as_slice(), t]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Up to `limit` unpinned chunks in eviction order: unreferenced by any manifest
    /// first, then least recently used. `(hash, size)`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn eviction_order(&self, limit: usize) -> Result<Vec<(ChunkHash, u64)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT c.hash, c.size FROM cache_chunks c WHERE c.pinned = 0
                 ORDER BY EXISTS (SELECT 1 FROM cache_manifest m WHERE m.hash = c.hash), c.last_used LIMIT ?1",
            )
            .map_err(self.err())?;
        let rows =
            st.query_map([limit as i64], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))).map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (h, size) = row.map_err(self.err())?;
            if let Ok(h) = ChunkHash::try_from(h.as_slice()) {
                out.push((h, size.max(0) as u64));
            }
        }
        Ok(out)
    }

    /// Every indexed chunk's hash (a malformed one as its raw bytes, for `verify`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn hashes(&self) -> Result<Vec<Vec<u8>>> {
        let mut st = self.conn.prepare("SELECT hash FROM cache_chunks").map_err(self.err())?;
        let rows = st.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Forgets every chunk and manifest.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn clear(&self) -> Result<()> {
        self.conn.execute_batch("DELETE FROM cache_manifest; DELETE FROM cache_chunks;").map_err(self.err())
    }

    /// Totals for `musefs cache stats`; a file counts as fully cached when it has
    /// `ceil(size / chunk_size)` chunks.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stats(&self, chunk_size: u64) -> Result<IndexStats> {
        let (chunks, bytes, pinned): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(size),0), coalesce(sum(CASE WHEN pinned THEN size ELSE 0 END),0) FROM cache_chunks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.err())?;
        let (files, logical): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count(DISTINCT m.file_id), coalesce(sum(c.size),0) FROM cache_manifest m
                 JOIN cache_chunks c ON c.hash = m.hash",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())?;
        let mut st = self
            .conn
            .prepare(
                "SELECT o.name, f.size, (SELECT count(*) FROM cache_manifest m JOIN cache_chunks c ON c.hash = m.hash
                                          WHERE m.file_id = f.id)
                 FROM files f JOIN origins o ON o.id = f.origin_id WHERE o.kind != 'local'",
            )
            .map_err(self.err())?;
        let mut per: Vec<(String, u64, u64)> = Vec::new();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            .map_err(self.err())?;
        for row in rows {
            let (name, size, have) = row.map_err(self.err())?;
            let full = (size.max(0) as u64).div_ceil(chunk_size.max(1)) == have as u64;
            match per.iter_mut().find(|p| p.0 == name) {
                Some(p) => {
                    p.1 += u64::from(full);
                    p.2 += 1;
                }
                None => per.push((name, u64::from(full), 1)),
            }
        }
        Ok(IndexStats {
            chunks: chunks as u64,
            bytes: bytes as u64,
            pinned_bytes: pinned as u64,
            files: files as u64,
            logical_bytes: logical as u64,
            per_origin: per,
        })
    }
}
