//! Clients configured ahead of time (`api.security.clients_dir`): every instance knows them from
//! its start, without a `POST /register`, so the Calls plugin's client survives pod restarts,
//! new nodes and scale-ups. The directory holds one entry per client, each with the files
//! `clientID` and `authKey`: what a Kubernetes Secret with those two keys looks like when
//! mounted at `<clients_dir>/<name>`. Read once at start; keys are bcrypt-hashed as they are read
//! and never logged.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{MAX_CLIENT_ID_LEN, MAX_KEY_LEN, MIN_KEY_LEN};

/// The file names inside each client's entry (the Secret's keys).
pub const ID_FILE: &str = "clientID";
/// See [`ID_FILE`].
pub const KEY_FILE: &str = "authKey";

/// Why the configured clients cannot be used; every message names the path.
#[derive(Debug, thiserror::Error)]
#[error("api.security.clients_dir: {path}: {reason}")]
pub struct PresetError {
    /// The directory, entry or file at fault.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

fn fail(path: &Path, reason: impl Into<String>) -> PresetError {
    PresetError {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// One configured client as read (the key in clear, to be hashed).
#[derive(Clone, PartialEq, Eq)]
pub struct Preset {
    /// The client ID.
    pub id: String,
    /// The auth key.
    pub key: String,
    /// The entry it came from.
    pub source: PathBuf,
}

impl std::fmt::Debug for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preset")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Reads every client entry of `dir`, in name order. Names starting with `.` are skipped (a
/// mounted Secret's `..data` links). Any entry that is not a directory with both files, an ID
/// or key outside `POST /register`'s bounds, or an ID given twice is an error: a daemon that
/// silently dropped the plugin's client would refuse its calls later, far from the cause.
pub fn read_dir(dir: &Path) -> Result<Vec<Preset>, PresetError> {
    let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, format!("cannot read the directory: {e}")))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| fail(dir, format!("cannot read the directory: {e}")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let mut out: Vec<Preset> = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for name in names {
        let entry = dir.join(&name);
        if !entry.is_dir() {
            return Err(fail(
                &entry,
                format!("expected a directory holding the files {ID_FILE} and {KEY_FILE} (a mounted Secret)"),
            ));
        }
        let id = read_value(&entry.join(ID_FILE))?;
        let key = read_value(&entry.join(KEY_FILE))?;
        if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
            return Err(fail(
                &entry.join(ID_FILE),
                format!("the client ID must be 1 to {MAX_CLIENT_ID_LEN} bytes long"),
            ));
        }
        if id.contains(':') || id.chars().any(char::is_control) {
            return Err(fail(
                &entry.join(ID_FILE),
                "the client ID must not contain ':' or control characters (it is a Basic auth user name)",
            ));
        }
        if key.len() < MIN_KEY_LEN || key.len() > MAX_KEY_LEN {
            return Err(fail(
                &entry.join(KEY_FILE),
                format!(
                    "the auth key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes long (it has {})",
                    key.len()
                ),
            ));
        }
        if let Some(first) = seen.get(&id) {
            return Err(fail(
                &entry,
                format!("client ID {id:?} is also configured in {}", first.display()),
            ));
        }
        seen.insert(id.clone(), entry.clone());
        out.push(Preset {
            id,
            key,
            source: entry,
        });
    }
    Ok(out)
}

/// A Secret value: the file's text without surrounding whitespace (a trailing newline from
/// `echo` or an editor is common).
fn read_value(path: &Path) -> Result<String, PresetError> {
    let raw = std::fs::read(path).map_err(|e| fail(path, format!("cannot read: {e}")))?;
    if raw.len() > 4096 {
        return Err(fail(path, "larger than 4096 bytes"));
    }
    let text = String::from_utf8(raw).map_err(|_| fail(path, "not UTF-8 text"))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(dir: &Path, name: &str, id: &str, key: &str) {
        let e = dir.join(name);
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join(ID_FILE), id).unwrap();
        std::fs::write(e.join(KEY_FILE), key).unwrap();
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_mounted_secrets_in_name_order_and_skips_hidden_entries() {
        let d = tempfile::tempdir().unwrap();
        client(d.path(), "plugin-b", "mattermost-b\n", &format!("{KEY}\n"));
        client(d.path(), "plugin-a", "mattermost-a", KEY);
        // What Kubernetes puts next to a mounted Secret's files.
        std::fs::create_dir_all(d.path().join("..data")).unwrap();
        let got = read_dir(d.path()).unwrap();
        let ids: Vec<&str> = got.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["mattermost-a", "mattermost-b"]);
        assert_eq!(got[1].key, KEY, "the trailing newline is not part of the key");
        assert!(!format!("{got:?}").contains(KEY), "the key leaked into Debug");
        assert!(read_dir(tempfile::tempdir().unwrap().path()).unwrap().is_empty());
    }

    #[test]
    fn every_bad_entry_is_an_error_naming_its_path() {
        type Make<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Make<'_>, &str); 7] = [
            ("missing dir", &|_| {}, "cannot read the directory"),
            (
                "plain file",
                &|d| std::fs::write(d.join("stray.txt"), "x").unwrap(),
                "expected a directory",
            ),
            (
                "no key",
                &|d| {
                    std::fs::create_dir_all(d.join("c")).unwrap();
                    std::fs::write(d.join("c").join(ID_FILE), "id").unwrap();
                },
                "authKey: cannot read",
            ),
            (
                "short key",
                &|d| client(d, "c", "id", "short"),
                "must be 32 to 72 bytes long (it has 5)",
            ),
            ("empty id", &|d| client(d, "c", " \n", KEY), "1 to 128 bytes"),
            ("colon", &|d| client(d, "c", "a:b", KEY), "must not contain ':'"),
            (
                "twice",
                &|d| {
                    client(d, "one", "same", KEY);
                    client(d, "two", "same", KEY);
                },
                "is also configured in",
            ),
        ];
        for (what, make, want) in cases {
            let d = tempfile::tempdir().unwrap();
            let dir = if what == "missing dir" {
                d.path().join("absent")
            } else {
                make(d.path());
                d.path().to_path_buf()
            };
            let e = read_dir(&dir).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.starts_with("api.security.clients_dir: ") && !e.contains(KEY),
                "{what}: {e}"
            );
        }
    }
}
