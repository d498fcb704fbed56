//! Parsing of `MSIGHT_*` environment variables, shared by every backend section.
//!
//! Every parser takes the variable's name so that its error names it, and shows
//! the expected form.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::Secret;
use crate::error::{Error, Result};

/// Where environment variables are read from. [`std::env::var`] in production;
/// tests pass a map so that they never touch the process environment.
pub trait EnvSource {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name)
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.trim().is_empty())
    }
}

impl<S: std::hash::BuildHasher> EnvSource for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
}

impl EnvSource for [(&str, &str)] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.as_slice().var(name)
    }
}

/// Reads one variable into one config field; a section's
/// [`Section::apply_env`](super::Section::apply_env) is a list of these.
/// A variable that is unset (or empty) leaves the field as it is; a
/// malformed one is an [`ErrorKind::InvalidConfig`](crate::ErrorKind)
/// error that names the variable and shows the expected form.
#[derive(Clone, Copy)]
pub struct Env<'a>(pub &'a dyn EnvSource);

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env<'_> {
    /// The text of `name`, as it is.
    pub fn string(&self, name: &str, field: &mut Option<String>) {
        if let Some(v) = self.0.var(name) {
            *field = Some(v);
        }
    }

    /// The text of `name`, trimmed, for a field that always has a value.
    pub fn string_req(&self, name: &str, field: &mut String) {
        if let Some(v) = self.0.var(name) {
            *field = v.trim().to_string();
        }
    }

    /// `name` as a [`Secret`].
    pub fn secret(&self, name: &str, field: &mut Option<Secret>) {
        if let Some(v) = self.0.var(name) {
            *field = Some(Secret::new(v));
        }
    }

    /// `name` as a file path.
    pub fn path(&self, name: &str, field: &mut Option<PathBuf>) {
        if let Some(v) = self.0.var(name) {
            *field = Some(PathBuf::from(v.trim()));
        }
    }

    /// `name` by [`parse_bool`].
    pub fn bool(&self, name: &str, field: &mut bool) -> Result<()> {
        if let Some(v) = self.0.var(name) {
            *field = parse_bool(name, &v)?;
        }
        Ok(())
    }

    /// `name` by [`parse_number`].
    pub fn number<T>(&self, name: &str, field: &mut T) -> Result<()>
    where
        T: FromStr + TryFrom<u64>,
    {
        if let Some(v) = self.0.var(name) {
            *field = parse_number(name, &v)?;
        }
        Ok(())
    }

    /// `name` by [`parse_duration`].
    pub fn duration(&self, name: &str, field: &mut Duration) -> Result<()> {
        if let Some(v) = self.0.var(name) {
            *field = parse_duration(name, &v)?;
        }
        Ok(())
    }

    /// `name` by [`parse_list`]; `example` shows the expected form in errors.
    pub fn list(&self, name: &str, example: &[&str], field: &mut Vec<String>) -> Result<()> {
        if let Some(v) = self.0.var(name) {
            *field = parse_list(name, &v, example)?;
        }
        Ok(())
    }

    /// `name` by the field type's [`FromStr`].
    pub fn parse<T: FromStr>(&self, name: &str, field: &mut T) -> Result<()>
    where
        T::Err: std::fmt::Display,
    {
        if let Some(v) = self.0.var(name) {
            *field = v
                .trim()
                .parse()
                .map_err(|e| Error::config(name, format!("{e} (got {:?})", v.trim())))?;
        }
        Ok(())
    }
}

/// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, any case (the Python
/// original accepts `true`, `1` and `yes` and treats anything else as false;
/// we refuse values that are neither, rather than guess).
pub fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(Error::config(
            name,
            format!("expected true/false, 1/0, yes/no or on/off, got {other:?}"),
        )),
    }
}

/// A non-negative integer that fits `T`.
pub fn parse_number<T>(name: &str, value: &str) -> Result<T>
where
    T: FromStr + TryFrom<u64>,
{
    let v = value.trim();
    let n: u64 = v
        .parse()
        .map_err(|_| Error::config(name, format!("expected a whole number, got {v:?}")))?;
    T::try_from(n).map_err(|_| Error::config(name, format!("{n} is out of range")))
}

/// A duration as humantime text (`500ms`, `5s`, `1m 30s`) or a plain number of seconds.
pub fn parse_duration(name: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if (0.0..1e12).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime_serde::re::humantime::parse_duration(v).map_err(|_| {
        Error::config(
            name,
            format!("expected a duration like \"5s\", \"250ms\" or a number of seconds, got {v:?}"),
        )
    })
}

/// A list of strings in the Python list-literal form the original uses
/// (`"['a:1', 'b:2']"`, single or double quotes) or comma-separated (`a:1,b:2`).
/// Empty items and empty lists are refused.
pub fn parse_list(name: &str, value: &str, example: &[&str]) -> Result<Vec<String>> {
    let v = value.trim();
    // The value may hold credentials (`nats://user:pass@host`): never echo them.
    let shown = super::redact_userinfo(v);
    let expected = || {
        let py = example
            .iter()
            .map(|e| format!("'{e}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "expected a Python list literal like \"[{py}]\" or a comma-separated list like \"{}\", got {shown:?}",
            example.join(",")
        )
    };
    let items = if let Some(inner) = v.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| Error::config(name, expected()))?;
        parse_python_items(inner).ok_or_else(|| Error::config(name, expected()))?
    } else {
        if v.contains(['\'', '"', ']']) {
            return Err(Error::config(name, expected()));
        }
        v.split(',').map(|s| s.trim().to_string()).collect()
    };
    if items.is_empty() || items.iter().any(|s| s.is_empty()) {
        return Err(Error::config(name, expected()));
    }
    Ok(items)
}

/// The items of a Python list literal body: quoted strings separated by
/// commas, an optional trailing comma. `None` when malformed.
fn parse_python_items(inner: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let quote = rest.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let body = &rest[1..];
        let end = body.find(quote)?;
        let item = &body[..end];
        if item.contains('\\') {
            return None;
        }
        items.push(item.trim().to_string());
        rest = body[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EX: &[&str] = &["nats://host:4222", "nats://other:4222"];

    #[test]
    fn python_list_literal_and_comma_forms() {
        let want = vec!["nats://a:4222".to_string(), "nats://b:4222".to_string()];
        for v in [
            "['nats://a:4222', 'nats://b:4222']",
            "[\"nats://a:4222\",\"nats://b:4222\"]",
            "  [ 'nats://a:4222' , \"nats://b:4222\", ]  ",
            "nats://a:4222,nats://b:4222",
            "nats://a:4222, nats://b:4222",
        ] {
            assert_eq!(parse_list("V", v, EX).unwrap(), want, "{v}");
        }
        assert_eq!(parse_list("V", "nats://a:4222", EX).unwrap(), want[..1]);
    }

    #[test]
    fn malformed_lists_show_the_expected_form() {
        for v in [
            "['nats://a:4222'",
            "[nats://a:4222]",
            "['a' 'b']",
            "[]",
            "['a',,'b']",
            "a,,b",
            "'a','b'",
            "['a\\'b']",
            "[1, 2]",
        ] {
            let e = parse_list("MSIGHT_NATS_SERVERS", v, EX).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("MSIGHT_NATS_SERVERS"), "{msg}");
            assert!(
                msg.contains("['nats://host:4222', 'nats://other:4222']"),
                "{msg}"
            );
        }
    }

    #[test]
    fn malformed_lists_do_not_echo_credentials() {
        for v in [
            "['nats://u:pw-marker@a:4222'",
            "nats://u:pw-marker@a:4222,,b:1",
            "[nats://tok-marker@a:4222]",
        ] {
            let msg = parse_list("MSIGHT_NATS_SERVERS", v, EX)
                .unwrap_err()
                .to_string();
            assert!(!msg.contains("marker"), "{msg}");
            assert!(msg.contains("***@a:4222"), "{msg}");
        }
    }

    #[test]
    fn bools_numbers_durations() {
        for t in ["true", "TRUE", "1", "yes", "Yes", "on"] {
            assert!(parse_bool("B", t).unwrap(), "{t}");
        }
        for f in ["false", "0", "no", "OFF"] {
            assert!(!parse_bool("B", f).unwrap(), "{f}");
        }
        assert!(parse_bool("MSIGHT_NATS_USE_TLS", "maybe")
            .unwrap_err()
            .to_string()
            .contains("MSIGHT_NATS_USE_TLS"));
        assert_eq!(parse_number::<u16>("P", "6379").unwrap(), 6379);
        assert!(parse_number::<u16>("P", "70000")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(parse_number::<u16>("P", "-1").is_err());
        assert!(parse_number::<u16>("P", "abc")
            .unwrap_err()
            .to_string()
            .contains("whole number"));
        assert_eq!(
            parse_duration("D", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("D", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("D", "0.5").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration("D", "soon").is_err());
        assert!(parse_duration("D", "-3").is_err());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = [("A", ""), ("B", "  "), ("C", "x")];
        assert_eq!(env.var("A"), None);
        assert_eq!(env.var("B"), None);
        assert_eq!(env.var("C").as_deref(), Some("x"));
    }
}
