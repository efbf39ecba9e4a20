//! Per-format options from the manifest (`[format.mp3] id3v2_version = "2.3"`), handed to
//! `plan` as a JSON object.

use musefs_plugin_api::{PluginError, PluginResult};
use serde_json::{Map, Value};

/// Parsed options with typed, checked getters; an unknown key is an error (a typo must
/// not be silently ignored).
#[derive(Debug, Clone, Default)]
pub struct Options {
    map: Map<String, Value>,
    format: &'static str,
}

impl Options {
    /// Parses `json` (an object, or empty) for format `format`, accepting only `known` keys.
    ///
    /// # Errors
    /// `INVALID_INPUT` naming the option for malformed JSON or an unknown key.
    pub fn parse(json: &str, format: &'static str, known: &[&str]) -> PluginResult<Self> {
        let bad = |m: String| PluginError::new(musefs_plugin_api::ErrorKind::INVALID_INPUT, m);
        let map = if json.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(json) {
                Ok(Value::Object(m)) => m,
                _ => return Err(bad(format!("[format.{format}]: options are not a table"))),
            }
        };
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(format!("[format.{format}]: unknown option `{k}` (known: {})", known.join(", "))));
        }
        Ok(Self { map, format })
    }

    /// A string option that must be one of `allowed`, else `default`.
    ///
    /// # Errors
    /// `INVALID_INPUT` naming the option and the allowed values.
    pub fn choice(&self, key: &str, allowed: &[&str], default: &str) -> PluginResult<String> {
        match self.map.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            Some(v) => Err(PluginError::new(
                musefs_plugin_api::ErrorKind::INVALID_INPUT,
                format!("[format.{}] {key} = {v}: expected one of {}", self.format, allowed.join(", ")),
            )),
        }
    }

    /// A non-negative integer option at most `max`, else `default`.
    ///
    /// # Errors
    /// `INVALID_INPUT` naming the option.
    pub fn uint(&self, key: &str, max: u64, default: u64) -> PluginResult<u64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v.as_u64().filter(|n| *n <= max).ok_or_else(|| {
                PluginError::new(
                    musefs_plugin_api::ErrorKind::INVALID_INPUT,
                    format!("[format.{}] {key} = {v}: expected an integer from 0 to {max}", self.format),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Options::parse(r#"{"paddin": 3}"#, "flac", &["padding"]).unwrap_err();
        assert!(e.message.contains("unknown option `paddin`"), "{}", e.message);
        let o = Options::parse(r#"{"v": "2.5", "n": -1}"#, "mp3", &["v", "n"]).unwrap();
        assert!(o.choice("v", &["2.3", "2.4"], "2.4").unwrap_err().message.contains("2.3, 2.4"));
        assert!(o.uint("n", 10, 0).is_err());
        assert_eq!(Options::parse("{}", "x", &[]).unwrap().uint("n", 10, 7).unwrap(), 7);
    }
}
