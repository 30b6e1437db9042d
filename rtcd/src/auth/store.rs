//! Registered clients, persisted in an embedded transactional database (redb) under
//! `[store] data_source`: client ID → bcrypt hash of its auth key. Calls are blocking; the
//! auth service runs them on the blocking pool.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const CLIENTS: TableDefinition<'_, &str, &str> = TableDefinition::new("clients");

/// The file inside `data_source` (rtcd's `data_source` is a directory too).
pub const DB_FILE: &str = "rtcd-rs.redb";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or database cannot be created, opened or read.
    #[error("store {path} (store.data_source): {reason}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A read or write failed.
    #[error("store: {0}")]
    Io(String),
    /// `insert_new` found the client already registered.
    #[error("already registered")]
    Conflict,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// The client registry.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when missing) `<dir>/rtcd-rs.redb`. An unwritable directory or a corrupt
    /// file is an error naming the path.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        let fail = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create directory: {e}")))?;
        let db = Database::create(&path).map_err(|e| fail(e.to_string()))?;
        // Create the table and prove the file is writable now, not at the first registration.
        let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
        txn.open_table(CLIENTS).map_err(|e| fail(e.to_string()))?;
        txn.commit().map_err(|e| fail(e.to_string()))?;
        Ok(Self { db, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored hash for `client_id`.
    pub fn get(&self, client_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(CLIENTS).map_err(io)?;
        Ok(table.get(client_id).map_err(io)?.map(|v| v.value().to_string()))
    }

    /// Stores a new client; [`StoreError::Conflict`] if it exists (checked in the same
    /// transaction, so two concurrent registrations cannot both win).
    pub fn insert_new(&self, client_id: &str, hash: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(CLIENTS).map_err(io)?;
            if table.get(client_id).map_err(io)?.is_some() {
                return Err(StoreError::Conflict);
            }
            table.insert(client_id, hash).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// Removes a client; `false` if it was not registered.
    pub fn delete(&self, client_id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let existed = {
            let mut table = txn.open_table(CLIENTS).map_err(io)?;
            table.remove(client_id).map_err(io)?.is_some()
        };
        txn.commit().map_err(io)?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.insert_new("a", "hash-a").unwrap();
            assert!(matches!(s.insert_new("a", "other"), Err(StoreError::Conflict)));
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get("a").unwrap().as_deref(), Some("hash-a"));
        assert!(s.delete("a").unwrap());
        assert!(!s.delete("a").unwrap());
        assert_eq!(s.get("a").unwrap(), None);
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            b"this is not a redb database at all, just text",
        )
        .unwrap();
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(DB_FILE) && e.contains("store.data_source"), "{e}");
    }

    #[test]
    fn an_unwritable_location_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file.join("sub")).unwrap_err().to_string();
        assert!(e.contains("cannot create directory"), "{e}");
    }
}
