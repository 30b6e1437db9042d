//! Reading a configuration: the TOML text is parsed with spans, checked key by key against the
//! known schema (so an unknown key is reported with its file, line, column and a suggestion),
//! deserialized over the defaults, overridden from the environment, then validated.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::{Config, ConfigError, env};

/// rtcd's default `-config` path, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/config.toml";

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// No file: the built-in defaults (plus the environment).
    Embedded,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Things worth a log line that are not errors (unknown `RTCD_*` variables).
    pub warnings: Vec<String>,
    /// Keys set from the environment, with the variable that set each.
    pub from_env: super::FromEnv,
}

/// Loads the configuration: `explicit` must exist; without it, [`DEFAULT_CONFIG_PATH`] is used
/// when present and the embedded defaults otherwise. `env` is the process environment (passed
/// in so that tests need not touch the real one).
pub fn load(explicit: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file()),
    };
    let Some(path) = path else {
        return load_str("", "<embedded defaults>", env).map(|l| Loaded {
            source: Source::Embedded,
            ..l
        });
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let loaded = load_str(&text, &path.display().to_string(), env)?;
    Ok(Loaded {
        source: Source::File(path),
        ..loaded
    })
}

/// Loads from TOML text; `origin` names it in messages.
pub fn load_str(text: &str, origin: &str, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let located = |offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        ConfigError::Parse {
            origin: origin.to_string(),
            line,
            column,
            message,
        }
    };

    // 1. Syntax, with spans.
    let doc = DeTable::parse(text)
        .map_err(|e| located(e.span().map_or(0, |s| s.start), e.message().trim().to_string()))?;

    // 2. Unknown keys, against the schema that the defaults spell out.
    let schema = toml::Table::try_from(Config::default())
        .map_err(|e| located(0, format!("internal: cannot build the key schema: {e}")))?;
    check_keys(doc.get_ref(), &schema, "", text, origin)?;

    // 3. Types, reported at the offending key.
    if let Err(e) = toml::from_str::<Config>(text) {
        let offset = e.span().map_or(0, |s| s.start);
        let key = key_at(doc.get_ref(), offset, "");
        let message = match key {
            Some(key) => format!("`{key}`: {}", e.message().trim()),
            None => e.message().trim().to_string(),
        };
        return Err(located(offset, message));
    }

    // 4. Environment over the file.
    let mut table: toml::Table = toml::from_str(text).map_err(|e| located(0, e.message().to_string()))?;
    let (from_env, warnings) = env::apply(&mut table, env)?;
    let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
        var: from_env
            .iter()
            .map(|(_, var)| *var)
            .collect::<Vec<_>>()
            .join(", "),
        value: String::new(),
        reason: e.message().to_string(),
    })?;

    // 5. Values.
    config.validate(&from_env).map_err(ConfigError::Invalid)?;
    Ok(Loaded {
        config,
        source: Source::Embedded,
        warnings,
        from_env,
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn check_keys(
    doc: &DeTable<'_>,
    schema: &toml::Table,
    prefix: &str,
    text: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (key, value) in doc {
        let name = key.get_ref().as_ref();
        let path = join(prefix, name);
        match schema.get(name) {
            None => {
                let (line, column) = line_column(text, key.span().start);
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_string(),
                    line,
                    column,
                    hint: suggest(&path, name, schema, prefix),
                    key: path,
                });
            }
            Some(toml::Value::Table(sub)) => {
                if let DeValue::Table(t) = value.get_ref() {
                    check_keys(t, sub, &path, text, origin)?;
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// "did you mean …", or an explanation for keys that published guides show but rtcd never had.
fn suggest(path: &str, name: &str, siblings: &toml::Table, prefix: &str) -> Option<String> {
    if path == "rtc.ice" || path.starts_with("rtc.ice.") {
        return Some(
            "rtcd has no port range: every peer's media shares one port, `rtc.ice_port_udp` \
             (and `rtc.ice_port_tcp` for ICE-TCP)"
                .into(),
        );
    }
    if let Some(same) = siblings.keys().find(|k| k.eq_ignore_ascii_case(name)) {
        return Some(format!(
            "did you mean `{}`? keys are lower-case",
            join(prefix, same)
        ));
    }
    let best = siblings
        .keys()
        .map(|k| (strsim::normalized_damerau_levenshtein(name, k), k))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((score, k)) = best
        && score >= 0.6
    {
        return Some(format!("did you mean `{}`?", join(prefix, k)));
    }
    // The right name in the wrong place, e.g. `[api] listen_address`.
    let schema = toml::Table::try_from(Config::default()).ok()?;
    let mut leaves = Vec::new();
    collect_leaves(&schema, "", &mut leaves);
    leaves
        .into_iter()
        .map(|leaf| {
            let last = leaf.rsplit('.').next().unwrap_or(&leaf).to_string();
            (strsim::normalized_damerau_levenshtein(name, &last), leaf)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, leaf)| format!("did you mean `{leaf}`?"))
}

fn collect_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = join(prefix, k);
        match v {
            toml::Value::Table(t) => collect_leaves(t, &path, out),
            _ => out.push(path),
        }
    }
}

/// The dotted key whose value holds byte `offset`.
fn key_at(doc: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in doc {
        let path = join(prefix, key.get_ref().as_ref());
        let span = value.span();
        let in_value = span.start <= offset && offset <= span.end;
        if let DeValue::Table(t) = value.get_ref()
            && let Some(inner) = key_at(t, offset, &path)
        {
            return Some(inner);
        }
        if in_value || key.span().contains(&offset) {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_column(t, 0), (1, 1));
        assert_eq!(line_column(t, 6), (2, 1));
        assert_eq!(line_column(t, 9), (2, 4));
    }
}
